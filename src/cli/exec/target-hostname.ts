// feature.hostname: the name the program's gethostname and uname report, read as mirrord does from the target's
// /etc/hostname (the kubelet writes the pod's name there; a container runtime its container's).

/** The most a hostname can be (HOST_NAME_MAX); a longer one is not a hostname, so the local one stays. */
const HOST_NAME_MAX = 64;

/** The hostname in the target's /etc/hostname, or undefined when it has none to read (the program then keeps the local one). */
export function hostnameFrom(file: string | undefined): string | undefined {
  const name = file?.split('\n')[0]!.trim();
  return name !== undefined && name !== '' && name.length <= HOST_NAME_MAX && !name.includes('\0') ? name : undefined;
}
