// Keeps the last lines a child process wrote, so an error can show what the agent said before it failed.

export interface LogTail {
  push(chunk: Buffer | string): void;
  text(): string;
}

export function createLogTail(maxLines: number): LogTail {
  let lines: string[] = [];
  let partial = '';
  return {
    push(chunk) {
      const parts = (partial + chunk.toString()).split('\n');
      partial = parts.pop() ?? '';
      lines.push(...parts);
      if (lines.length > maxLines) lines = lines.slice(-maxLines);
    },
    text() {
      return [...lines, partial].filter((line) => line !== '').join('\n');
    },
  };
}
