// A session's id, which names its iptables chains: apart from iptables.ts, so that checking one at the agent's start
// does not load node:child_process, which only incoming traffic's rules need.

/** Session ids become chain names (DOPPEL-<session>), which iptables caps at 28 characters. */
export const SESSION_PATTERN = /^[A-Za-z0-9-]{1,21}$/;
