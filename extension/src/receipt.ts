// A %%remote receipt in a notebook, drawn from its data (text only), with a Request button
// that asks for a reason and makes the request in the notebook's own kernel.
import { InputDialog } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { el } from './dom';

export const RECEIPT_MIME = 'application/vnd.syftlab.receipt+json';
const TOKEN = /^[0-9a-f]{16}$/;

interface IReceiptData {
  worker: string;
  parts: string[];
  status: string;
  color: string;
  held: number;
  token?: string;
  mock_rerun?: string | null;
  mock_traceback?: string;
}

/** Python source calling request_from_ui; both values as JSON string literals. */
export function requestCode(token: string, reason: string): string {
  return (
    "__import__('kernel_bridge.scientist.receipt', fromlist=['_']).request_from_ui(" +
    `${JSON.stringify(token)}, ${JSON.stringify(reason)})`
  );
}

class ReceiptRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(private tracker: INotebookTracker) {
    super();
    this.addClass('syftlab-receipt');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const d = model.data[RECEIPT_MIME] as unknown as IReceiptData;
    this.node.textContent = '';
    this.node.style.borderLeftColor = d.color;
    const line = el('div', 'syftlab-receipt-line');
    d.parts.forEach((p, i) => {
      if (i) {
        line.appendChild(document.createTextNode(' · '));
      }
      line.appendChild(el(i === 1 ? 'b' : 'span', i === 1 ? 'syftlab-receipt-status' : '', p));
    });
    (line.querySelector('.syftlab-receipt-status') as HTMLElement | null)?.style.setProperty(
      'color',
      d.color
    );
    this.node.appendChild(line);
    if (d.held && d.token && TOKEN.test(d.token)) {
      const button = el('button', 'syftlab-request-button jp-Button jp-mod-styled jp-mod-accept', 'Request…');
      button.title = `Ask ${d.worker}'s owner to release the held output`;
      const msg = el('span', 'syftlab-request-msg');
      button.onclick = () => void this.request(d, button, msg);
      line.append(' ', button, ' ', msg);
    }
    if (d.mock_rerun) {
      const mock = el('div', 'syftlab-mock-rerun');
      mock.appendChild(el('b', undefined, `${d.worker} · MOCK`));
      mock.appendChild(document.createTextNode(` re-run: ${d.mock_rerun}`));
      if (d.mock_traceback) {
        const det = el('details');
        det.append(el('summary', undefined, 'mock traceback'), el('pre', undefined, d.mock_traceback));
        mock.appendChild(det);
      }
      this.node.appendChild(mock);
    }
  }

  private async request(d: IReceiptData, button: HTMLButtonElement, msg: HTMLElement): Promise<void> {
    const panel = this.tracker.find((p: NotebookPanel) => p.node.contains(this.node));
    const kernel = panel?.sessionContext.session?.kernel;
    if (!kernel) {
      msg.textContent = 'no kernel: run the cell again';
      return;
    }
    const result = await InputDialog.getText({
      title: `Ask ${d.worker} to release this output`,
      label: 'Reason (the data owner reads it)',
      placeholder: 'what it is for'
    });
    const reason = (result.value ?? '').trim();
    if (!result.button.accept || !reason) {
      return;
    }
    button.disabled = true;
    msg.textContent = 'requesting…';
    try {
      const future = kernel.requestExecute({
        code: '',
        silent: true,
        store_history: false,
        user_expressions: { syftlab: requestCode(d.token ?? '', reason) }
      });
      const reply = await future.done;
      const expr = (reply.content as any).user_expressions?.syftlab;
      const out = expr && expr.status === 'ok' ? expr.data?.['application/json'] : null;
      if (out && typeof out.id === 'number') {
        msg.textContent = `requested #${out.id} (${out.status})`;
        button.remove();
      } else {
        msg.textContent = out?.error ?? `the request failed (${expr?.ename ?? 'no reply'})`;
        button.disabled = false;
      }
    } catch (e) {
      msg.textContent = (e as Error).message;
      button.disabled = false;
    }
  }
}

/** Draw receipts in every notebook (and let their Request button reach its kernel). */
export function addReceiptRenderer(tracker: INotebookTracker): void {
  const add = (panel: NotebookPanel) => {
    const rendermime = panel.content.rendermime;
    if (rendermime.mimeTypes.includes(RECEIPT_MIME)) {
      return;
    }
    rendermime.addFactory(
      { safe: true, mimeTypes: [RECEIPT_MIME], createRenderer: () => new ReceiptRenderer(tracker) },
      0
    );
  };
  tracker.forEach(add);
  tracker.widgetAdded.connect((_, panel) => add(panel));
}
