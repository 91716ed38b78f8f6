/**
 * Users and groups for running beside an unprivileged QEMU: the socket's owner and group, and
 * the user the backend drops to once its host devices are open. Names are resolved through
 * NSS (`getent`), numbers are taken as they are.
 */
import { spawnSync } from 'node:child_process';
import { ConfigError, ErrorCode } from '../errors.js';

function lookup(db: 'passwd' | 'group', name: string): string[] {
  const r = spawnSync('getent', [db, name], { encoding: 'utf8' });
  const line = r.status === 0 ? r.stdout.split('\n')[0] : undefined;
  if (!line) throw new ConfigError(ErrorCode.ConfigInvalid, `no such ${db === 'passwd' ? 'user' : 'group'}: ${name}`);
  return line.split(':');
}

/** A user name or number as a uid, with its primary group. */
export function userId(user: string | number): { uid: number; gid: number } {
  if (typeof user === 'number' || /^\d+$/.test(user)) {
    const uid = Number(user);
    const row = spawnSync('getent', ['passwd', String(uid)], { encoding: 'utf8' }).stdout.split(':');
    return { uid, gid: row.length > 3 ? Number(row[3]) : uid };
  }
  const row = lookup('passwd', user);
  return { uid: Number(row[2]), gid: Number(row[3]) };
}

/** A group name or number as a gid. */
export function groupId(group: string | number): number {
  if (typeof group === 'number' || /^\d+$/.test(group)) return Number(group);
  return Number(lookup('group', group)[2]);
}

/**
 * Drops to `spec` (USER or USER:GROUP) for good: supplementary groups, then the group, then the
 * user (in that order: after setuid the others are no longer allowed). glibc applies each to
 * every thread of the process, the data-plane workers included. Returns what it became.
 */
export function dropPrivileges(spec: string): { uid: number; gid: number } {
  const [user, group] = spec.split(':') as [string, string | undefined];
  const u = userId(user);
  const gid = group !== undefined ? groupId(group) : u.gid;
  if (!process.setgroups || !process.setgid || !process.setuid) {
    throw new ConfigError(ErrorCode.ConfigInvalid, '--user needs a POSIX system');
  }
  process.setgroups([gid]);
  process.setgid(gid);
  process.setuid(u.uid);
  if (process.getuid?.() !== u.uid || process.geteuid?.() !== u.uid || process.getgid?.() !== gid) {
    throw new ConfigError(ErrorCode.ConfigInvalid, `dropping to ${spec} did not take`);
  }
  return { uid: u.uid, gid };
}
