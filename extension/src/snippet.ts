// The `%%remote` cell a click on a dataset inserts.
import { IDataset } from './api';

/** Python identifier check: assets are variables of that name in a remote cell. */
const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function snippet(worker: string, d: IDataset): string {
  const cols = d.schema.columns?.map(c => c.name).join(', ');
  const name = IDENT.test(d.name) ? d.name : `globals()[${JSON.stringify(d.name)}]`;
  const lines = [
    `%%remote ${worker}`,
    `# ${d.name}: ${(d.description || d.type).replace(/\n/g, ' ')}`
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
