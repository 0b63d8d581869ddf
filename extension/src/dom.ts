// Building DOM from remote data: text nodes only (requests carry scientist-written text).

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls?: string,
  text?: string | number | null,
  children: Node[] = []
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (cls) {
    node.className = cls;
  }
  if (text !== undefined && text !== null) {
    node.textContent = String(text);
  }
  for (const c of children) {
    node.appendChild(c);
  }
  return node;
}

export function clear(node: HTMLElement): void {
  while (node.firstChild) {
    node.removeChild(node.firstChild);
  }
}

export function fmt(x: unknown, digits = 3): string {
  if (typeof x === 'number') {
    return Number.isInteger(x) ? String(x) : x.toPrecision(digits);
  }
  return x === null || x === undefined ? 'n/a' : String(x);
}

/** ε (and δ) everywhere in syftlab's UI: two decimals (0.70, 9.30, 10.00). */
export function fmtEpsilon(x: unknown): string {
  return typeof x === 'number' && Number.isFinite(x) ? x.toFixed(2) : fmt(x);
}

/** A table built from header strings and rows of values, all as text. */
export function table(cls: string, header: string[], rows: unknown[][]): HTMLTableElement {
  const t = el('table', cls);
  const head = el('tr');
  for (const h of header) {
    head.appendChild(el('th', undefined, h));
  }
  t.appendChild(el('thead', undefined, undefined, [head]));
  const body = el('tbody');
  for (const r of rows) {
    const tr = el('tr');
    for (const v of r) {
      tr.appendChild(el('td', undefined, fmt(v, 4)));
    }
    body.appendChild(tr);
  }
  t.appendChild(body);
  return t;
}
