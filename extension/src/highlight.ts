// Python highlighting for the lineage listing: a small tokenizer emitting text spans.

const KEYWORDS = new Set(
  (
    'False None True and as assert async await break class continue def del elif else ' +
    'except finally for from global if import in is lambda nonlocal not or pass raise ' +
    'return try while with yield'
  ).split(' ')
);

const TOKEN =
  /(#[^\n]*)|("""[\s\S]*?"""|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')|(\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)|(%%?[A-Za-z_]+)/g;

/** `code` as a <pre> of spans (classes cm-comment, cm-string, ...); text nodes only. */
export function highlight(code: string): HTMLPreElement {
  const pre = document.createElement('pre');
  pre.className = 'syftlab-code';
  let last = 0;
  const push = (text: string, cls?: string) => {
    if (!text) {
      return;
    }
    if (!cls) {
      pre.appendChild(document.createTextNode(text));
      return;
    }
    const span = document.createElement('span');
    span.className = cls;
    span.textContent = text;
    pre.appendChild(span);
  };
  for (const m of code.matchAll(TOKEN)) {
    const at = m.index ?? 0;
    push(code.slice(last, at));
    if (m[1]) {
      push(m[1], 'cm-comment');
    } else if (m[2]) {
      push(m[2], 'cm-string');
    } else if (m[3]) {
      push(m[3], 'cm-number');
    } else if (m[4]) {
      push(m[4], KEYWORDS.has(m[4]) ? 'cm-keyword' : undefined);
    } else {
      push(m[5], 'cm-meta');
    }
    last = at + m[0].length;
  }
  push(code.slice(last));
  return pre;
}
