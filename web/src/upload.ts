// Uploading a file to the page's own listener (`POST /upload`). This uses
// XMLHttpRequest rather than fetch because only it reports the progress of
// a request body.

import { type Attachment, isFileUrl } from "./protocol";
import { plainText, sizeAgainstLimit } from "./text";

/** Types shown as an inline picture; everything else is a download link only. */
export const IMAGE_TYPES: ReadonlySet<string> = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

export type UploadResult = { ok: true; attachment: Attachment } | { ok: false; problem: string; aborted?: boolean };

export interface Upload {
  done: Promise<UploadResult>;
  abort(): void;
}

/**
 * The file name for `Content-Disposition` (RFC 6266 with RFC 5987's
 * `filename*`): percent-encoded UTF-8, so any name survives in a header
 * that may only hold ASCII.
 */
export function dispositionOf(name: string): string {
  const encoded = encodeURIComponent(name).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `attachment; filename*=UTF-8''${encoded}`;
}

/** Why a file is not sent: its size and the server's limit. */
export function tooLarge(file: File, maxBytes: number): string {
  const [size, limit] = sizeAgainstLimit(file.size, maxBytes);
  return `${plainText(file.name) || "The file"} is too large (${size}): the server accepts files up to ${limit}.`;
}

/** What to tell the user about a refused upload, by HTTP status. */
export function refusal(status: number, file: File, maxBytes: number): string {
  switch (status) {
    case 401:
      return "The server no longer accepts uploads from this connection (it was probably renewed); try again.";
    case 411:
      return "The server needs the length of the file first, and the browser did not send it.";
    case 413:
      return tooLarge(file, maxBytes);
    case 429:
      return "Too many uploads in the last minute: wait a little, then try again.";
    default:
      return `The upload failed (HTTP ${status}).`;
  }
}

/** Sends `file` with the connection's token; `progress` gets the fraction sent. */
export function upload(file: File, token: string, maxBytes: number, progress: (fraction: number) => void): Upload {
  const xhr = new XMLHttpRequest();
  const done = new Promise<UploadResult>((resolve) => {
    xhr.open("POST", "/upload");
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.setRequestHeader("Content-Disposition", dispositionOf(file.name));
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable && event.total > 0) {
        progress(event.loaded / event.total);
      }
    };
    xhr.onload = () => {
      if (xhr.status !== 201) {
        resolve({ ok: false, problem: refusal(xhr.status, file, maxBytes) });
        return;
      }
      let body: unknown;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      const b = (body ?? {}) as Record<string, unknown>;
      if (!isFileUrl(b.url)) {
        resolve({ ok: false, problem: "The server's answer to the upload could not be read." });
        return;
      }
      resolve({
        ok: true,
        attachment: {
          url: b.url,
          name: typeof b.name === "string" ? b.name : file.name,
          size: typeof b.size === "number" ? b.size : file.size,
          mime: typeof b.mime === "string" ? b.mime : file.type,
        },
      });
    };
    xhr.onerror = () => resolve({ ok: false, problem: "The upload failed: the connection to the server was lost." });
    xhr.onabort = () => resolve({ ok: false, problem: "The upload was cancelled.", aborted: true });
    xhr.send(file);
  });
  return { done, abort: () => xhr.abort() };
}
