// The owner's "Approvals" panel: pending requests to decide, history, budget ledger.

import { api, ILedgerRow, IOwnerRequest, post } from './api';
import { clear, el, fmtEpsilon, table } from './dom';
import { renderLineage } from './lineage';
import { refreshPlans } from './plans';
import { PollingWidget } from './polling';

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const IMAGE_MIMES = ['image/png', 'image/jpeg'];
type Tab = 'pending' | 'history' | 'budget' | 'plans';

function when(ts: number | null): string {
  return ts ? new Date(ts * 1000).toLocaleString() : '';
}

/** The snapshot's preview (data from the server, rendered as text and tables). */
export function renderPreview(p: any): HTMLElement {
  const box = el('div', 'syftlab-snapshot');
  if (!p) {
    return box;
  }
  if (p.kind === 'table') {
    box.appendChild(el('div', 'syftlab-note', `table ${p.shape[0]} × ${p.shape[1]}`));
    box.appendChild(
      table(
        'syftlab-preview',
        ['', ...p.columns],
        p.rows.map((r: unknown[], i: number) => [p.index[i], ...r])
      )
    );
  } else if (p.kind === 'tensor') {
    box.appendChild(
      table(
        'syftlab-stats',
        ['type', 'shape', 'dtype', 'min', 'max', 'mean', 'std'],
        [[p.type, JSON.stringify(p.shape), p.dtype, p.min, p.max, p.mean, p.std]]
      )
    );
    box.appendChild(el('pre', 'syftlab-text', p.text));
  } else if (p.kind === 'outputs') {
    for (const it of p.items) {
      if (it.type === 'image' && IMAGE_MIMES.includes(it.mime) && BASE64.test(it.data)) {
        const img = el('img', 'syftlab-image');
        img.src = `data:${it.mime};base64,${it.data}`;
        box.appendChild(img);
      } else {
        box.appendChild(el('pre', `syftlab-text syftlab-${it.type}`, it.text));
      }
    }
  } else {
    box.appendChild(el('div', 'syftlab-note', p.type));
    box.appendChild(el('pre', 'syftlab-text', p.text));
  }
  return box;
}

export class ApprovalsPanel extends PollingWidget {
  constructor() {
    super();
    this.id = 'syftlab-approvals';
    this.addClass('syftlab-approvals');
    this.title.label = 'Approvals';
    this.title.closable = true;
    const tabs = el('div', 'syftlab-tabs');
    for (const t of ['pending', 'history', 'budget', 'plans'] as Tab[]) {
      const b = el('button', 'syftlab-tab jp-Button jp-mod-styled jp-mod-minimal', t[0].toUpperCase() + t.slice(1));
      b.dataset.tab = t;
      b.onclick = () => this.showTab(t);
      tabs.appendChild(b);
    }
    this.status = el('div', 'syftlab-note');
    this.pending = el('div', 'syftlab-pane syftlab-pending');
    this.history = el('div', 'syftlab-pane syftlab-history');
    this.budget = el('div', 'syftlab-pane syftlab-budget');
    this.plans = el('div', 'syftlab-pane syftlab-plans-pane');
    this.node.append(tabs, this.status, this.pending, this.history, this.budget, this.plans);
    this.showTab('pending');
  }

  showTab(tab: Tab): void {
    this.tab = tab;
    for (const b of Array.from(this.node.querySelectorAll('.syftlab-tab'))) {
      b.classList.toggle('syftlab-active', (b as HTMLElement).dataset.tab === tab);
    }
    this.pending.hidden = tab !== 'pending';
    this.history.hidden = tab !== 'history';
    this.budget.hidden = tab !== 'budget';
    this.plans.hidden = tab !== 'plans';
    void this.refresh();
  }

  async refresh(): Promise<void> {
    if (this.busy) {
      return;
    }
    this.busy = true;
    try {
      if (this.tab === 'pending') {
        await this.refreshPending();
      } else if (this.tab === 'history') {
        const { requests } = await api<{ requests: IOwnerRequest[] }>('requests?status=history');
        this.renderHistory(requests);
      } else if (this.tab === 'plans') {
        await refreshPlans(this.plans, () => void this.refresh());
      } else {
        const r = await api<{ ledger: ILedgerRow[]; available: boolean }>('ledger');
        this.renderLedger(r.ledger, r.available);
      }
      this.status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      this.status.textContent = `Error: ${(e as Error).message}`;
    } finally {
      this.busy = false;
    }
  }

  private async refreshPending(): Promise<void> {
    const { requests } = await api<{ requests: IOwnerRequest[] }>('requests?status=pending');
    const ids = new Set(requests.map(r => String(r.id)));
    // Cards stay in place across refreshes, so a half-typed denial reason survives.
    for (const card of Array.from(this.pending.querySelectorAll('.syftlab-card'))) {
      if (!ids.has((card as HTMLElement).dataset.id ?? '')) {
        card.remove();
      }
    }
    for (const r of requests) {
      if (!this.pending.querySelector(`.syftlab-card[data-id="${r.id}"]`)) {
        const { request } = await api<{ request: IOwnerRequest }>(`requests/${r.id}`);
        this.pending.appendChild(this.card(request));
      }
    }
    const empty = this.pending.querySelector('.syftlab-empty');
    if (!requests.length && !empty) {
      this.pending.appendChild(el('div', 'syftlab-empty', 'No pending requests.'));
    } else if (requests.length && empty) {
      empty.remove();
    }
  }

  private card(r: IOwnerRequest): HTMLElement {
    const card = el('article', 'syftlab-card');
    card.dataset.id = String(r.id);
    card.appendChild(
      el('header', 'syftlab-card-head', undefined, [
        el('span', 'syftlab-request-id', `#${r.id}`),
        el('span', 'syftlab-scientist', r.scientist),
        el('span', 'syftlab-note', `${r.value_type} · ${r.size_text} · ${when(r.created)}`)
      ])
    );
    card.appendChild(el('div', 'syftlab-label', 'Reason'));
    card.appendChild(el('div', 'syftlab-reason', r.reason));
    card.appendChild(renderLineage(r.lineage));
    card.appendChild(el('div', 'syftlab-label', `Snapshot (sha256 ${r.sha256.slice(0, 12)}…)`));
    card.appendChild(renderPreview(r.preview));
    const approve = el('button', 'syftlab-approve jp-Button jp-mod-styled jp-mod-accept', 'Approve');
    const reason = el('input', 'syftlab-deny-reason jp-InputGroup');
    reason.placeholder = 'Reason for denying (required)';
    const deny = el('button', 'syftlab-deny jp-Button jp-mod-styled jp-mod-warn', 'Deny');
    deny.disabled = true;
    reason.oninput = () => {
      deny.disabled = !reason.value.trim();
    };
    const msg = el('div', 'syftlab-card-msg');
    const decide = async (action: 'approve' | 'deny') => {
      approve.disabled = deny.disabled = true;
      try {
        const body = action === 'deny' ? { reason: reason.value.trim() } : {};
        await post(`requests/${r.id}/${action}`, body);
        card.remove();
        void this.refresh();
      } catch (e) {
        msg.textContent = (e as Error).message;
        approve.disabled = false;
        deny.disabled = !reason.value.trim();
      }
    };
    approve.onclick = () => void decide('approve');
    deny.onclick = () => void decide('deny');
    card.appendChild(el('div', 'syftlab-actions', undefined, [approve, reason, deny]));
    card.appendChild(msg);
    return card;
  }

  private renderHistory(rows: IOwnerRequest[]): void {
    clear(this.history);
    if (!rows.length) {
      this.history.appendChild(el('div', 'syftlab-empty', 'No decided requests yet.'));
      return;
    }
    this.history.appendChild(
      table(
        'syftlab-history-table',
        ['#', 'scientist', 'status', 'reason', 'denial reason', 'type', 'size', 'decided'],
        rows.map(r => [
          r.id, r.scientist, r.status, r.reason, r.deny_reason ?? '', r.value_type,
          r.size_text, when(r.decided)
        ])
      )
    );
  }

  private renderLedger(rows: ILedgerRow[], available: boolean): void {
    clear(this.budget);
    if (!available) {
      this.budget.appendChild(el('div', 'syftlab-empty', 'No privacy-budget ledger (n/a).'));
      return;
    }
    this.budget.appendChild(
      table(
        'syftlab-ledger',
        ['scientist', 'asset', 'ε spent', 'ε limit', 'ε remaining', 'δ spent', 'δ limit'],
        rows.map(r => [
          r.scientist ?? 'all scientists (asset total)', r.asset, fmtEpsilon(r.epsilon_spent),
          fmtEpsilon(r.epsilon_limit), fmtEpsilon(r.epsilon_remaining), fmtEpsilon(r.delta_spent),
          fmtEpsilon(r.delta_limit)
        ])
      )
    );
  }

  private tab: Tab = 'pending';
  private status: HTMLDivElement;
  private pending: HTMLDivElement;
  private history: HTMLDivElement;
  private budget: HTMLDivElement;
  private plans: HTMLDivElement;
  private busy = false;
}
