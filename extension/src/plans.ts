// Plans in the owner's Approvals panel (the Plans tab) and in the scientist's sidebar.
//
// A plan is code plus declared inputs plus an output policy; the owner approves its
// exact hash once. The card shows the code (highlighted), the inputs, the policy in
// words (as the worker states it) and the progress: runs used, ε spent.

import { api, post } from './api';
import { clear, el, fmtEpsilon } from './dom';
import { highlight } from './highlight';

export interface IPlanInfo {
  id: number;
  name: string;
  hash: string;
  status: string;
  scientist: string;
  reason: string;
  deny_reason: string | null;
  asset: string;
  runs_used: number;
  max_runs: number;
  epsilon_spent: number;
  epsilon_total: number | null;
  created: number;
  decided: number | null;
}

export interface IPlanReview extends IPlanInfo {
  document: {
    code: string;
    entry: string;
    description?: string;
    inputs: { asset: string; columns: string[]; target?: string | null };
  };
  policy_words: string[];
}

/** "runs 3/20 · ε 0.42 of 2.00" */
export function progressText(p: IPlanInfo): string {
  let text = `runs ${p.runs_used}/${p.max_runs}`;
  if (p.epsilon_total !== null && p.epsilon_total !== undefined) {
    text += ` · ε ${fmtEpsilon(p.epsilon_spent)} of ${fmtEpsilon(p.epsilon_total)}`;
  }
  return text;
}

function when(ts: number | null): string {
  return ts ? new Date(ts * 1000).toLocaleString() : '';
}

/** One plan for review: what runs, on what, under which policy; approve / deny. */
export function planCard(p: IPlanReview, done: () => void): HTMLElement {
  const card = el('article', `syftlab-card syftlab-plan syftlab-status-${p.status}`);
  card.dataset.id = String(p.id);
  card.appendChild(
    el('header', 'syftlab-card-head', undefined, [
      el('span', 'syftlab-request-id', `Plan #${p.id}`),
      el('span', 'syftlab-plan-name', p.name),
      el('span', 'syftlab-scientist', p.scientist),
      el('span', 'syftlab-plan-status', p.status),
      el('span', 'syftlab-note', when(p.created))
    ])
  );
  card.appendChild(el('div', 'syftlab-label', 'Reason'));
  card.appendChild(el('div', 'syftlab-reason', p.reason));
  if (p.document.description) {
    card.appendChild(el('div', 'syftlab-plan-description', p.document.description));
  }
  const inputs = p.document.inputs;
  card.appendChild(el('div', 'syftlab-label', 'Inputs'));
  card.appendChild(
    el(
      'div',
      'syftlab-plan-inputs',
      `asset '${inputs.asset}': columns ${inputs.columns.join(', ')}` +
        (inputs.target ? `; target '${inputs.target}'` : '')
    )
  );
  card.appendChild(el('div', 'syftlab-label', 'Output policy'));
  const words = el('ul', 'syftlab-plan-policy');
  for (const w of p.policy_words) {
    words.appendChild(el('li', undefined, w));
  }
  card.appendChild(words);
  card.appendChild(el('div', 'syftlab-label', 'Progress'));
  card.appendChild(el('div', 'syftlab-plan-progress', progressText(p)));
  card.appendChild(
    el('div', 'syftlab-label', `Code (entry function '${p.document.entry}', sha256 ${p.hash.slice(0, 12)}…)`)
  );
  card.appendChild(highlight(p.document.code));
  if ((p.status === 'denied' || p.status === 'revoked') && p.deny_reason) {
    const what = p.status === 'denied' ? 'Denied' : 'Revoked';
    card.appendChild(el('div', 'syftlab-deny-text', `${what}: ${p.deny_reason}`));
  }
  if (p.status === 'approved') {
    card.appendChild(revokeBar(p, done));
  }
  if (p.status !== 'pending') {
    return card;
  }
  const approve = el('button', 'syftlab-approve jp-Button jp-mod-styled jp-mod-accept', 'Approve plan');
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
      // Approval names the hash shown here: a plan changed meanwhile is refused.
      const body = action === 'deny' ? { reason: reason.value.trim() } : { hash: p.hash };
      await post(`plans/${p.id}/${action}`, body);
      done();
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

/** An approved plan can be stopped: no further run starts (a reason is required). */
function revokeBar(p: IPlanReview, done: () => void): HTMLElement {
  const reason = el('input', 'syftlab-revoke-reason jp-InputGroup');
  reason.placeholder = 'Reason for revoking (required)';
  const revoke = el('button', 'syftlab-revoke jp-Button jp-mod-styled jp-mod-warn', 'Revoke plan');
  revoke.disabled = true;
  reason.oninput = () => {
    revoke.disabled = !reason.value.trim();
  };
  const msg = el('div', 'syftlab-card-msg');
  revoke.onclick = async () => {
    revoke.disabled = true;
    try {
      await post(`plans/${p.id}/revoke`, { reason: reason.value.trim() });
      done();
    } catch (e) {
      msg.textContent = (e as Error).message;
      revoke.disabled = !reason.value.trim();
    }
  };
  return el('div', 'syftlab-actions', undefined, [reason, revoke, msg]);
}

/** The Plans tab: pending plans first (to decide), then every other plan with its progress. */
export async function refreshPlans(pane: HTMLElement, done: () => void): Promise<void> {
  const { plans } = await api<{ plans: IPlanInfo[] }>('plans?status=all');
  const pendingIds = new Set(plans.filter(p => p.status === 'pending').map(p => String(p.id)));
  // Pending cards stay in place across refreshes, so a half-typed denial reason survives.
  for (const card of Array.from(pane.querySelectorAll('.syftlab-plan'))) {
    const id = (card as HTMLElement).dataset.id ?? '';
    if (!pendingIds.has(id) || !card.classList.contains('syftlab-status-pending')) {
      card.remove();
    }
  }
  let decided = pane.querySelector('.syftlab-plans-decided') as HTMLElement | null;
  if (!decided) {
    decided = el('div', 'syftlab-plans-decided');
    pane.appendChild(decided);
  }
  for (const p of plans) {
    if (p.status === 'pending' && !pane.querySelector(`.syftlab-plan[data-id="${p.id}"]`)) {
      const { plan } = await api<{ plan: IPlanReview }>(`plans/${p.id}`);
      pane.insertBefore(planCard(plan, done), decided);
    }
  }
  clear(decided);
  const rest = plans.filter(p => p.status !== 'pending');
  if (!plans.length) {
    decided.appendChild(el('div', 'syftlab-empty', 'No plans.'));
  }
  for (const p of rest) {
    const { plan } = await api<{ plan: IPlanReview }>(`plans/${p.id}`);
    const details = el('details', 'syftlab-plan-decided');
    details.dataset.id = String(p.id);
    details.appendChild(
      el('summary', undefined, undefined, [
        el('span', 'syftlab-request-id', `Plan #${p.id}`),
        el('span', 'syftlab-plan-name', ` ${p.name} `),
        el('span', 'syftlab-plan-status', p.status),
        el('span', 'syftlab-plan-progress', ` · ${progressText(p)}`)
      ])
    );
    details.appendChild(planCard(plan, done));
    decided.appendChild(details);
  }
}

/** The scientist's plans on one worker, for the sidebar. */
export function planList(plans: IPlanInfo[]): HTMLElement {
  const list = el('ul', 'syftlab-plans');
  for (const p of [...plans].reverse()) {
    const li = el('li', `syftlab-plan-item syftlab-status-${p.status}`, undefined, [
      el('span', 'syftlab-request-id', `plan #${p.id}`),
      el('span', 'syftlab-request-status', p.status),
      el('span', 'syftlab-plan-name', p.name),
      el('span', 'syftlab-plan-progress', progressText(p))
    ]);
    li.dataset.id = String(p.id);
    if (p.deny_reason) {
      li.appendChild(el('div', 'syftlab-deny-text', `Owner: ${p.deny_reason}`));
    }
    list.appendChild(li);
  }
  return list;
}
