// The submit page: a code editor that follows the chosen runtime (highlighting, starter code),
// the runtime's limits, and the test-case editor.
"use strict";

(function submitPage() {
  const form = document.getElementById("submit-form");
  if (!form) return;
  const runtimes = JSON.parse(document.getElementById("runtime-data").textContent || "{}");
  const runtimeSelect = document.getElementById("id_runtime");
  const source = document.getElementById("id_source");
  const submit = () => (form.requestSubmit ? form.requestSubmit() : form.submit());

  // Code editor: syntax highlighting, line numbers, Tab indents, Ctrl/Cmd+Enter submits.
  let editor = null;
  if (window.CodeMirror && source) {
    editor = window.CodeMirror.fromTextArea(source, {
      lineNumbers: true,
      indentUnit: 4,
      matchBrackets: true,
      viewportMargin: Infinity,
      extraKeys: {
        Tab: (cm) =>
          cm.somethingSelected() ? cm.indentSelection("add") : cm.replaceSelection("    ", "end"),
        "Shift-Tab": (cm) => cm.indentSelection("subtract"),
        "Ctrl-Enter": () => submit(),
        "Cmd-Enter": () => submit(),
      },
    });
    form.addEventListener("submit", () => editor.save());
  }
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
    }
  });

  // Starter code: a runtime's hello-world fills the editor when it is empty or still holds
  // the hello-world of the runtime picked before it. Code the evaluator wrote is never replaced.
  const getSource = () => (editor ? editor.getValue() : source.value);
  const setSource = (text) => (editor ? editor.setValue(text) : (source.value = text));
  const unixLines = (text) => text.replace(/\r\n?/g, "\n");
  function offerStarter(previous, info) {
    const current = unixLines(getSource());
    const untouched =
      current.trim() === "" || (previous && current === unixLines(previous.hello_world));
    if (untouched && current !== unixLines(info.hello_world)) setSource(info.hello_world);
  }

  // The picked runtime: its highlighting, its starter code, and its limits and compile step
  // next to the picker and as the limits' placeholders.
  const note = document.getElementById("runtime-limits");
  const compileNote = document.getElementById("runtime-compiles");
  let shown = null; // the runtime the page was showing before this one
  function showRuntime({ starter }) {
    const info = runtimes[runtimeSelect.value];
    if (!info) return;
    if (editor && window.editorModes) window.editorModes.use(editor, info.editor_mode);
    if (starter) offerStarter(shown, info);
    shown = info;
    const [time, memory, output] = [info.time_limit_ms, info.memory_mb, info.output_kb];
    // A closed picker shows only the version ("GCC 12"): the note names the language too.
    note.textContent =
      `${info.display_name}: default ${time[0]} ms, ${memory[0]} MB, ${output[0]} KB output; ` +
      `at most ${time[1]} ms, ${memory[1]} MB, ${output[1]} KB. ` +
      (info.network ? "Network access is ON for this runtime." : "No network access.");
    compileNote.textContent = info.compiles
      ? `Compiled: each submission compiles once (within ${info.compile_time_limit_ms} ms, ` +
        `${info.compile_memory_mb} MB), then runs every test case.`
      : "No compile step: each test case runs the source as it is.";
    for (const [name, [initial, maximum]] of Object.entries({
      time_limit_ms: time,
      memory_mb: memory,
      output_kb: output,
    })) {
      const input = document.getElementById(`id_${name}`);
      input.placeholder = `${initial} (max ${maximum})`;
      input.max = maximum;
      input.min = 1;
    }
  }
  if (runtimeSelect) {
    runtimeSelect.addEventListener("change", () => showRuntime({ starter: true }));
    // A fresh form starts from the hello-world; a resubmission or a form sent back keeps its code.
    showRuntime({ starter: form.dataset.starterCode === "true" });
  }

  // Test cases: add rows from the formset's empty form, remove by marking DELETE.
  const list = document.getElementById("case-list");
  const total = document.getElementById("id_cases-TOTAL_FORMS");
  const template = document.getElementById("case-template");
  function renumber() {
    let number = 0;
    for (const row of list.querySelectorAll("[data-case]")) {
      if (row.hidden) continue;
      number += 1;
      row.querySelector("[data-case-number]").textContent = number;
    }
  }
  function wireRemove(row) {
    const box = row.querySelector('input[name$="-DELETE"]');
    if (!box) return;
    box.hidden = true;
    const label = box.closest("label");
    label.classList.add("button");
    label.addEventListener("click", (event) => {
      event.preventDefault();
      box.checked = true;
      row.hidden = true;
      renumber();
    });
  }
  list.querySelectorAll("[data-case]").forEach(wireRemove);
  document.getElementById("add-case").addEventListener("click", () => {
    const index = Number(total.value);
    const html = template.innerHTML.replaceAll("__prefix__", String(index));
    list.insertAdjacentHTML("beforeend", html);
    total.value = String(index + 1);
    const row = list.lastElementChild;
    wireRemove(row);
    renumber();
    row.querySelector("textarea").focus();
  });
})();
