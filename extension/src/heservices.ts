// The approval panel's "HE" tab: the worker's homomorphic-encryption services (encrypted
// predictions from a model, encrypted evaluation on a table) and what each scientist used.

import { api } from './api';
import { clear, el, fmt, fmtEpsilon, table } from './dom';

export interface IHEServiceRow {
  asset: string;
  kind: 'predict' | 'evaluate';
  scientist: string | null;
  used: number;
  limit: number | null;
  predictions_per_scientist?: number;
  epsilon_per_evaluation?: number;
  columns?: string[];
}

function service(r: IHEServiceRow): string {
  return r.kind === 'predict'
    ? `encrypted predictions (${r.predictions_per_scientist} per scientist)`
    : `encrypted evaluation (ε ${fmtEpsilon(r.epsilon_per_evaluation)} each; ${(r.columns ?? []).join(', ')})`;
}

function used(r: IHEServiceRow): string {
  const n = r.kind === 'predict' ? fmt(r.used) : `ε ${fmtEpsilon(r.used)}`;
  if (r.limit === null) {
    return n;
  }
  return `${n} of ${r.kind === 'predict' ? fmt(r.limit) : fmtEpsilon(r.limit)}`;
}

/** Fetch `/syftlab/he` and show it in `pane`. */
export async function refreshHEServices(pane: HTMLElement): Promise<void> {
  const { services } = await api<{ services: IHEServiceRow[] }>('he');
  clear(pane);
  if (!services.length) {
    pane.appendChild(el('div', 'syftlab-empty', 'No HE services (declare [assets.<name>.he] in the worker TOML).'));
    return;
  }
  pane.appendChild(
    table(
      'syftlab-he',
      ['asset', 'service', 'scientist', 'used'],
      services.map(r => [r.asset, service(r), r.scientist ?? 'all scientists', used(r)])
    )
  );
}
