// The scientist's "Remote data" sidebar: workers, their datasets, the scientist's requests.

import { api, IDataset, IWorker } from './api';
import { clear, el, fmt, fmtEpsilon, table } from './dom';
import { planList } from './plans';
import { PollingWidget } from './polling';

/** Refresh period of the sidebar (ms): the issue asks for ≤ 2 s. */
export class RemoteDataSidebar extends PollingWidget {
  constructor(private insert: (worker: string, d: IDataset) => boolean) {
    super();
    this.addClass('syftlab-sidebar');
    this.title.caption = 'Remote data';
    this.node.appendChild(el('h2', 'syftlab-title', 'Remote data'));
    this.body = el('div', 'syftlab-body');
    this.status = el('div', 'syftlab-note', 'Connecting…');
    this.node.appendChild(this.status);
    this.node.appendChild(this.body);
  }

  async refresh(): Promise<void> {
    if (this.busy) {
      return;
    }
    this.busy = true;
    try {
      const { workers } = await api<{ workers: IWorker[] }>('workers');
      this.render(workers);
      this.status.textContent = workers.length
        ? `Updated ${new Date().toLocaleTimeString()}`
        : 'No workers configured (c.Syftlab.connections_file).';
    } catch (e) {
      this.status.textContent = `Cannot list workers: ${(e as Error).message}`;
    } finally {
      this.busy = false;
    }
  }

  private render(workers: IWorker[]): void {
    // Keep the user's open/closed dataset details across refreshes.
    const open = new Set(
      Array.from(this.body.querySelectorAll('details[open]')).map(
        d => (d as HTMLElement).dataset.key
      )
    );
    clear(this.body);
    for (const w of workers) {
      const box = el('section', 'syftlab-worker');
      box.dataset.worker = w.name;
      const state = w.online ? 'online' : 'offline';
      const head = el('div', 'syftlab-worker-head', undefined, [
        el('span', `syftlab-dot syftlab-${state}`),
        el('span', 'syftlab-worker-name', w.name),
        el('span', 'syftlab-worker-state', w.online ? `online · ${fmt(w.latency_ms)} ms` : 'offline')
      ]);
      head.title = w.error ? `${w.url}\n${w.error}` : w.url;
      box.appendChild(head);
      for (const d of w.datasets) {
        box.appendChild(this.datasetItem(w, d, open));
      }
      if (w.requests.length) {
        box.appendChild(el('div', 'syftlab-subtitle', 'My requests'));
        const list = el('ul', 'syftlab-requests');
        for (const r of [...w.requests].reverse()) {
          const li = el('li', `syftlab-request syftlab-status-${r.status}`, undefined, [
            el('span', 'syftlab-request-id', `#${r.id}`),
            el('span', 'syftlab-request-status', r.status),
            el('span', 'syftlab-request-reason', r.reason)
          ]);
          li.dataset.id = String(r.id);
          if (r.deny_reason) {
            li.appendChild(el('div', 'syftlab-deny-text', `Owner: ${r.deny_reason}`));
          }
          list.appendChild(li);
        }
        box.appendChild(list);
      }
      if (w.plans && w.plans.length) {
        box.appendChild(el('div', 'syftlab-subtitle', 'My plans'));
        box.appendChild(planList(w.plans));
      }
      this.body.appendChild(box);
    }
  }

  private datasetItem(w: IWorker, d: IDataset, open: Set<string | undefined>): HTMLElement {
    const key = `${w.name}/${d.name}`;
    const eps = w.budget && w.budget[d.name];
    const item = el('details', 'syftlab-dataset');
    item.dataset.key = key;
    item.dataset.asset = d.name;
    if (open.has(key)) {
      item.open = true;
    }
    // Inserting a cell is an explicit action (this button); the row only opens the details.
    const insert = el('button', 'syftlab-insert jp-Button jp-mod-styled jp-mod-accept', 'Insert %%remote cell');
    insert.title = `Insert a %%remote ${w.name} cell using ${d.name} below the active cell`;
    insert.onclick = ev => {
      ev.preventDefault();
      if (!this.insert(w.name, d)) {
        this.status.textContent = 'Open a notebook first: the cell goes into the active one.';
      }
    };
    const rows = d.rows !== null && d.rows !== undefined ? `${d.rows} rows` : '';
    const summary = el('summary', undefined, undefined, [
      el('span', 'syftlab-disclosure'),
      el('span', 'syftlab-dataset-name', d.name),
      el('span', 'syftlab-dataset-type', [d.type, rows].filter(Boolean).join(', ')),
      el('span', 'syftlab-eps', eps ? `ε left ${fmtEpsilon(eps.epsilon_remaining)}` : 'ε n/a')
    ]);
    summary.title = 'Show the schema and a mock preview';
    item.appendChild(summary);
    item.appendChild(el('div', 'syftlab-description', d.description));
    if (d.schema.columns) {
      item.appendChild(
        table('syftlab-schema', ['column', 'kind'], d.schema.columns.map(c => [c.name, c.kind]))
      );
      const preview = Array.isArray(d.mock_preview) ? d.mock_preview : [];
      if (preview.length) {
        const cols = Object.keys(preview[0]);
        item.appendChild(el('div', 'syftlab-subtitle', 'Mock preview'));
        // Every column: the table scrolls sideways inside the sidebar instead of being cut.
        item.appendChild(
          el('div', 'syftlab-scroll', undefined, [
            table('syftlab-preview', cols, preview.map((r: any) => cols.map(c => r[c])))
          ])
        );
      }
    } else {
      item.appendChild(
        el('div', 'syftlab-schema-array', `${d.schema.dtype ?? ''} shape ${JSON.stringify(d.schema.shape ?? null)}`)
      );
      const p = d.mock_preview || {};
      item.appendChild(
        el('div', 'syftlab-preview', `mock ${JSON.stringify(p.shape)} ${p.dtype ?? ''}: ${(p.head || []).slice(0, 8).map((x: unknown) => fmt(x)).join(', ')} …`)
      );
    }
    item.appendChild(insert);
    return item;
  }

  private body: HTMLDivElement;
  private status: HTMLDivElement;
  private busy = false;
}
