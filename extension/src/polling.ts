import { Widget } from '@lumino/widgets';

/** How often the sidebar, the approvals panel and the status item refresh (the issue asks ≤ 2 s). */
export const REFRESH_MS = 2000;

/** A widget that refreshes itself every REFRESH_MS once started, until disposed. */
export abstract class PollingWidget extends Widget {
  start(): void {
    void this.refresh();
    this.timer = window.setInterval(() => void this.refresh(), REFRESH_MS);
  }

  dispose(): void {
    window.clearInterval(this.timer);
    super.dispose();
  }

  abstract refresh(): Promise<void>;

  private timer = 0;
}
