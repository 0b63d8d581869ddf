// Status-bar item: the remaining ε on the workers the current notebook uses.
import { INotebookTracker } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';

import { api, Budget } from './api';
import { fmtEpsilon } from './dom';
import { PollingWidget } from './polling';

/** Asked of a notebook's kernel (silently, when idle): the workers it is connected to. */
export const KERNEL_QUERY =
  "(lambda m: m.connected_workers() if m else [])(__import__('sys').modules.get(" +
  "'kernel_bridge.scientist.worker'))";

export interface IKernelWorker {
  name: string;
  url: string;
}

/** The Lab's workers (by name) that the kernel is connected to: same URL, or same name. */
export function workersUsed(
  connected: IKernelWorker[],
  urls: { [name: string]: string }
): string[] {
  const names = Object.keys(urls);
  return names.filter(n =>
    connected.some(c => c.url === urls[n] || (c.name === n && !names.some(m => urls[m] === c.url)))
  );
}

export class BudgetStatus extends PollingWidget {
  constructor(private tracker: INotebookTracker) {
    super();
    this.addClass('syftlab-status-budget');
    this.addClass('jp-StatusBar-TextItem');
    this.node.textContent = 'ε n/a';
  }

  /** The kernel's open connections; the last answer while it is busy (never queue behind a cell). */
  private async connections(kernel: Kernel.IKernelConnection): Promise<IKernelWorker[]> {
    if (kernel.status !== 'idle') {
      return this.known.get(kernel.id) ?? [];
    }
    const future = kernel.requestExecute({
      code: '',
      silent: true,
      store_history: false,
      user_expressions: { syftlab: KERNEL_QUERY }
    });
    const reply = await future.done;
    const expr = (reply.content as any).user_expressions?.syftlab;
    const data = expr && expr.status === 'ok' ? expr.data?.['application/json'] : null;
    const found: IKernelWorker[] = Array.isArray(data) ? data : [];
    this.known.set(kernel.id, found);
    return found;
  }

  async refresh(): Promise<void> {
    const nb = this.tracker.currentWidget;
    if (!nb) {
      this.node.textContent = 'ε: no notebook';
      return;
    }
    if (this.busy) {
      return;
    }
    this.busy = true;
    try {
      const kernel = nb.sessionContext.session?.kernel;
      const connected = kernel ? await this.connections(kernel) : [];
      const all = await api<{ budget: { [w: string]: Budget }; urls: { [w: string]: string } }>(
        'budget'
      );
      const used = workersUsed(connected, all.urls ?? {});
      if (!used.length) {
        this.node.textContent = 'ε: no workers connected in this notebook';
        this.node.title = '';
        return;
      }
      const parts = used.map(w => {
        const b = all.budget[w];
        if (!b) {
          return `${w} n/a`;
        }
        const assets = Object.keys(b).sort();
        return `${w}: ${assets.map(a => `${a} ${fmtEpsilon(b[a].epsilon_remaining)}`).join(' · ') || 'n/a'}`;
      });
      this.node.textContent = `ε left ${parts.join(' | ')}`;
      this.node.title = 'Remaining privacy budget (ε) per worker and asset';
    } catch (e) {
      this.node.textContent = 'ε n/a';
      this.node.title = (e as Error).message;
    } finally {
      this.busy = false;
    }
  }

  private known = new Map<string, IKernelWorker[]>();
  private busy = false;
}
