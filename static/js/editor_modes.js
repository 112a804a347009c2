// Highlighting by a runtime's editor mode, a MIME type such as text/x-c++src. CodeMirror's
// meta.js names the mode file that defines each MIME type, and loadmode.js fetches that file
// (with the modes it depends on) the first time a page needs it: a page loads only the modes
// it shows, not the thirty the catalogue uses. A MIME type no mode file defines is plain text.
"use strict";

window.editorModes = (function editorModes() {
  const CodeMirror = window.CodeMirror;
  if (!CodeMirror || !CodeMirror.findModeByMIME || !CodeMirror.autoLoadMode) return null;
  CodeMirror.modeURL = document.currentScript.dataset.modeUrl;
  return {
    // Highlights the editor's text as `mime`; empty or unknown: plain text.
    use(editor, mime) {
      const info = mime ? CodeMirror.findModeByMIME(mime) : null;
      if (!info || info.mode === "null") {
        editor.setOption("mode", "text/plain");
        return;
      }
      // Plain until the mode's file has loaded; then autoLoadMode sets the mode again.
      editor.setOption("mode", mime);
      CodeMirror.autoLoadMode(editor, info.mode);
    },
  };
})();
