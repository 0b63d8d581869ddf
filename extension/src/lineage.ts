// A request's lineage in the Approvals panel: the step that produced the value first and
// highlighted, then the private steps that led to it; later steps and mock cells folded.
// The server arranges it (kernel_bridge/owner/lineage.py); this only draws it, as text.

import { el } from './dom';
import { highlight } from './highlight';

export interface ILineageEntry {
  seq: number;
  kind: string;
  kernel: string;
  code: string;
  target?: boolean;
}
export interface ILineage {
  target: ILineageEntry | null;
  leading: ILineageEntry[];
  rest: ILineageEntry[];
}

function title(e: ILineageEntry): string {
  return `[${e.seq}] ${e.kind}` + (e.kernel === 'private' ? '' : ` · ${e.kernel}`);
}

function step(e: ILineageEntry, cls: string): HTMLElement {
  const box = el('div', `syftlab-step ${cls}`);
  box.dataset.seq = String(e.seq);
  box.appendChild(el('div', 'syftlab-step-title', title(e)));
  box.appendChild(highlight(e.code ?? ''));
  return box;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

export function renderLineage(view: ILineage | undefined): HTMLElement {
  const box = el('div', 'syftlab-lineage');
  if (!view) {
    return box;
  }
  if (view.target) {
    box.appendChild(el('div', 'syftlab-label', 'Requested value, produced by'));
    box.appendChild(step(view.target, 'syftlab-step-target'));
  } else {
    box.appendChild(
      el('div', 'syftlab-note', 'No step is marked as producing the value: the private session follows.')
    );
  }
  if (view.leading.length) {
    const d = el('details', 'syftlab-leading');
    d.open = true;
    d.appendChild(
      el('summary', 'syftlab-label', `What led to it (${plural(view.leading.length, 'private step')})`)
    );
    for (const e of view.leading) {
      d.appendChild(step(e, 'syftlab-step-leading'));
    }
    box.appendChild(d);
  }
  if (view.rest.length) {
    const d = el('details', 'syftlab-rest');
    d.appendChild(
      el('summary', 'syftlab-label', `${plural(view.rest.length, 'more step')} (later steps, mock kernel)`)
    );
    for (const e of view.rest) {
      d.appendChild(step(e, 'syftlab-step-rest'));
    }
    box.appendChild(d);
  }
  return box;
}
