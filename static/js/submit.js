// The submit page: a code editor, the chosen runtime's limits, and the test-case editor.
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

  // The runtime's defaults and caps, next to the picker and as the limits' placeholders.
  function showRuntime() {
    const info = runtimes[runtimeSelect.value];
    const note = document.getElementById("runtime-limits");
    if (!info) return;
    if (editor) editor.setOption("mode", info.language);
    const [time, memory, output] = [info.time_limit_ms, info.memory_mb, info.output_kb];
    note.textContent =
      `Default ${time[0]} ms, ${memory[0]} MB, ${output[0]} KB output; ` +
      `at most ${time[1]} ms, ${memory[1]} MB, ${output[1]} KB. ` +
      (info.network ? "Network access is ON for this runtime." : "No network access.");
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
    runtimeSelect.addEventListener("change", showRuntime);
    showRuntime();
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
