// The `%%remote` cell a click on a dataset inserts.
import { IDataset } from './api';

/** Python identifier check: assets are variables of that name in a remote cell. */
const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** One line of comment text: a worker's strings must not add lines of code to the cell. */
function line(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f\u2028\u2029]+/g, ' ');
}

export function snippet(worker: string, d: IDataset): string {
  const cols = line(d.schema.columns?.map(c => c.name).join(', ') ?? '');
  const name = IDENT.test(d.name) ? d.name : `globals()[${JSON.stringify(d.name)}]`;
  const lines = [
    `%%remote ${line(worker)}`,
    `# ${line(d.name)}: ${line(d.description || d.type)}`
  ];
  if (cols) {
    lines.push(`# columns: ${cols}`);
    lines.push(`summary = ${name}.describe()`);
  } else {
    lines.push(`print(${name}.shape, ${name}.dtype)`);
  }
  lines.push('# outputs stay held on the worker: request them, or add --mock to try on mock data');
  return lines.join('\n');
}

/** The index of the cell to insert below: the active one, or the first cell that connects
 * to `worker` (`%remote connect ... worker`, `worker = kb.connect(...)`) when the active
 * cell comes before it, so the new cell never runs before its connection. */
export function insertionIndex(sources: string[], active: number, worker: string): number {
  const name = worker.replace(/[^A-Za-z0-9_-]/g, '');
  const connects = new RegExp(
    `(%remote\\s+connect\\b[^\\n]*\\b${name}\\b)|(\\b${name}\\s*=\\s*kb\\.(connect|launch)\\()`
  );
  const at = sources.findIndex(s => connects.test(s));
  return Math.max(active, at);
}
