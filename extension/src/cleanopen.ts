// Opening a notebook must not mark it modified. When its kernel starts, JupyterLab writes
// the kernel's name and language_info (with this machine's Python version) into the
// notebook's metadata; a notebook saved elsewhere then looks edited though nobody touched
// it. A metadata update of those two keys on a notebook without unsaved edits keeps it clean.
import { INotebookModel, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';

const KERNEL_KEYS = new Set(['kernelspec', 'language_info']);

function watch(panel: NotebookPanel): void {
  void panel.context.ready.then(() => {
    const model = panel.context.model as INotebookModel;
    model.metadataChanged.connect((_, change) => {
      // The model turns dirty right after this signal; it still says what it was before.
      if (!KERNEL_KEYS.has(change.key) || model.dirty) {
        return;
      }
      void Promise.resolve().then(() => {
        model.dirty = false;
      });
    });
  });
}

export function keepKernelMetadataClean(tracker: INotebookTracker): void {
  tracker.forEach(watch);
  tracker.widgetAdded.connect((_, panel) => watch(panel));
}
