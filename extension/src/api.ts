// Calls to the syftlab server extension (/syftlab/...), authenticated by JupyterLab.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { ILineage } from './lineage';
import type { IPlanInfo } from './plans';

export type Side = 'owner' | 'scientist';

export interface IBudgetEntry {
  epsilon_spent: number;
  epsilon_limit: number;
  epsilon_remaining: number;
  delta_spent?: number;
  delta_limit?: number;
}
export type Budget = { [asset: string]: IBudgetEntry } | null;

export interface IColumn {
  name: string;
  kind: string;
}
export interface IDataset {
  name: string;
  description: string;
  type: string;
  rows: number | null;
  schema: { columns?: IColumn[]; dtype?: string; shape?: (number | null)[] | null };
  mock_preview: any;
}
export interface IScientistRequest {
  id: number;
  reason: string;
  status: string;
  deny_reason: string | null;
  value_type: string;
  size: number;
}
export interface IWorker {
  name: string;
  url: string;
  online: boolean;
  latency_ms: number | null;
  datasets: IDataset[];
  requests: IScientistRequest[];
  plans?: IPlanInfo[];
  budget: Budget;
  error: string | null;
}
export interface IOwnerRequest {
  id: number;
  scientist: string;
  reason: string;
  kind: string;
  value_type: string;
  size: number;
  size_text: string;
  sha256: string;
  status: string;
  deny_reason: string | null;
  created: number;
  decided: number | null;
  code?: string;
  lineage?: ILineage;
  preview?: any;
}
export interface ILedgerRow {
  scientist: string | null;
  asset: string;
  epsilon_spent: number;
  epsilon_limit: number;
  epsilon_remaining: number;
  delta_spent?: number;
  delta_limit?: number;
}

/** Call `/syftlab/<path>`; throws an Error carrying the server's message on failure. */
export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'syftlab', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  let data: any = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const msg = (data && (data.message || data.reason)) || response.statusText;
    throw new Error(String(msg));
  }
  return data as T;
}

export function post<T>(path: string, body: unknown): Promise<T> {
  return api<T>(path, { method: 'POST', body: JSON.stringify(body) });
}
