// Status-bar item: the remaining ε on the workers the current notebook uses.
import { INotebookTracker } from '@jupyterlab/notebook';

import { api, Budget } from './api';
import { fmtEpsilon } from './dom';
import { PollingWidget } from './polling';

/** Worker names a notebook mentions: `%%remote a b`, `name="a"` or a bare word `a`. */
export function workersIn(sources: string[], known: string[]): string[] {
  const text = sources.join('\n');
  return known.filter(n => new RegExp(`(^|[^A-Za-z0-9_])${n.replace(/[^A-Za-z0-9_-]/g, '')}($|[^A-Za-z0-9_])`).test(text));
}

export class BudgetStatus extends PollingWidget {
  constructor(private tracker: INotebookTracker) {
    super();
    this.addClass('syftlab-status-budget');
    this.addClass('jp-StatusBar-TextItem');
    this.node.textContent = 'ε n/a';
  }

  async refresh(): Promise<void> {
    const nb = this.tracker.currentWidget;
    if (!nb) {
      this.node.textContent = 'ε: no notebook';
      return;
    }
    try {
      const all = await api<{ budget: { [w: string]: Budget } }>('budget');
      const sources: string[] = [];
      const cells = nb.content.model?.cells;
      if (cells) {
        for (let i = 0; i < cells.length; i++) {
          sources.push(cells.get(i).sharedModel.getSource());
        }
      }
      const used = workersIn(sources, Object.keys(all.budget));
      if (!used.length) {
        this.node.textContent = 'ε: no workers in this notebook';
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
    }
  }

}
