// Which names the program's lookups turned into which addresses, so that an outgoing filter by host name applies to a
// connection to one of them (the program connects to an address; only its lookup knew the name).
import { isIP } from 'node:net';

export type Where = 'remote' | 'local';

/** Addresses remembered at most; the oldest is forgotten first. */
const MAX_ADDRESSES = 4096;

export interface ResolvedNames {
  record(name: string, addresses: readonly string[], where: Where): void;
  /** Every name a lookup gave this address, remote or local. */
  namesOf(address: string): string[];
  /** The name the target's DNS last gave this address, if any. */
  remoteNameOf(address: string): string | undefined;
}

export function createResolvedNames(): ResolvedNames {
  const byAddress = new Map<string, Map<string, Where>>();
  return {
    record(name, addresses, where) {
      const key = name.toLowerCase().replace(/\.$/, '');
      for (const address of addresses.map(normalAddress)) {
        const names = byAddress.get(address) ?? new Map<string, Where>();
        // Re-inserted so that the latest lookup's name comes last and the address counts as recent.
        names.delete(key);
        names.set(key, where);
        byAddress.delete(address);
        byAddress.set(address, names);
        if (byAddress.size > MAX_ADDRESSES) byAddress.delete(byAddress.keys().next().value!);
      }
    },
    namesOf: (address) => [...(byAddress.get(normalAddress(address))?.keys() ?? [])],
    remoteNameOf(address) {
      const names = [...(byAddress.get(normalAddress(address)) ?? [])];
      return names.reverse().find(([, where]) => where === 'remote')?.[0];
    },
  };
}

/** One spelling per address: an IPv4-mapped IPv6 address is the IPv4 address it stands for, IPv6 as URLs write it. */
export function normalAddress(address: string): string {
  if (isIP(address) !== 6) return address;
  const host = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (!mapped) return host;
  const [high, low] = [parseInt(mapped[1]!, 16), parseInt(mapped[2]!, 16)];
  return [high >> 8, high & 255, low >> 8, low & 255].join('.');
}
