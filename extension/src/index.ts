// syftlab in JupyterLab: a scientist's "Remote data" sidebar and budget status, or an
// owner's "Approvals" panel, depending on which side the server extension serves.
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { api, IDataset, Side } from './api';
import { ApprovalsPanel } from './approvals';
import { BudgetStatus } from './budgetstatus';
import { keepKernelMetadataClean } from './cleanopen';
import { addReceiptRenderer } from './receipt';
import { RemoteDataSidebar } from './sidebar';
import { insertionIndex, snippet } from './snippet';

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
  '<path d="M12 3C7.6 3 4 4.3 4 6v12c0 1.7 3.6 3 8 3s8-1.3 8-3V6c0-1.7-3.6-3-8-3zm0 2c3.9 0 6 1.1 6 1s-2.1 1-6 1-6-.9-6-1 2.1-1 6-1zm6 13c0 .1-2.1 1-6 1s-6-.9-6-1v-2.3c1.5.8 3.7 1.3 6 1.3s4.5-.5 6-1.3zm0-5c0 .1-2.1 1-6 1s-6-.9-6-1v-2.3c1.5.8 3.7 1.3 6 1.3s4.5-.5 6-1.3z"/></g></svg>';
const icon = new LabIcon({ name: 'syftlab:remote', svgstr: ICON_SVG });

function insertSnippet(tracker: INotebookTracker, worker: string, d: IDataset): boolean {
  const panel = tracker.currentWidget;
  if (!panel) {
    return false;
  }
  const nb = panel.content;
  const cells = nb.model?.cells;
  const sources: string[] = [];
  if (cells) {
    for (let i = 0; i < cells.length; i++) {
      sources.push(cells.get(i).sharedModel.getSource());
    }
  }
  // Below the active cell, but never above the cell that connects to the worker.
  nb.activeCellIndex = insertionIndex(sources, nb.activeCellIndex, worker);
  NotebookActions.insertBelow(nb);
  const cell = nb.activeCell;
  if (!cell) {
    return false;
  }
  cell.model.sharedModel.setSource(snippet(worker, d));
  void nb.scrollToCell(cell);
  return true;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'syftlab:plugin',
  description: 'Remote-data sidebar, owner approval panel and privacy-budget status for syftlab.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, IStatusBar, ILayoutRestorer],
  activate: async (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null
  ) => {
    let side: Side;
    try {
      side = (await api<{ side: Side }>('info')).side;
    } catch (e) {
      console.warn('syftlab: server extension not reachable', e);
      return;
    }
    keepKernelMetadataClean(tracker);
    if (side === 'scientist') {
      addReceiptRenderer(tracker);
      const sidebar = new RemoteDataSidebar((w, d) => insertSnippet(tracker, w, d));
      sidebar.id = 'syftlab-remote-data';
      sidebar.title.icon = icon;
      app.shell.add(sidebar, 'left', { rank: 200 });
      sidebar.start();
      if (statusBar) {
        const item = new BudgetStatus(tracker);
        statusBar.registerStatusItem('syftlab:budget', {
          item,
          align: 'left',
          rank: 50,
          isActive: () => true
        });
        item.start();
      }
      return;
    }
    let main: MainAreaWidget<ApprovalsPanel> | null = null;
    const command = 'syftlab:open-approvals';
    app.commands.addCommand(command, {
      label: 'Open syftlab approvals',
      execute: () => {
        let widget = main;
        if (!widget || widget.isDisposed) {
          const content = new ApprovalsPanel();
          widget = new MainAreaWidget<ApprovalsPanel>({ content });
          widget.id = 'syftlab-approvals-main';
          widget.title.label = 'Approvals';
          widget.title.icon = icon;
          widget.title.closable = true;
          content.start();
          main = widget;
        }
        if (!widget.isAttached) {
          app.shell.add(widget, 'main');
        }
        app.shell.activateById(widget.id);
      }
    });
    palette?.addItem({ command, category: 'syftlab' });
    void app.restored.then(() => app.commands.execute(command));
  }
};

export default plugin;
