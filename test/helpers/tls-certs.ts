// Real X.509 certificates for the TLS tests, made with the openssl command line in a temporary
// directory, laid out as QEMU's tls-creds-x509 expects (ca-cert.pem, server-*.pem, client-*.pem).
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface TestCa {
  readonly dir: string;
  readonly cert: string;
  readonly key: string;
}

const openssl = (args: string[], cwd: string) => execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });

/** A self-signed certificate authority named `name`. */
export function makeCa(name: string): TestCa {
  const dir = mkdtempSync(path.join(tmpdir(), `tsvmm-ca-${name}-`));
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem'], dir);
  return { dir, cert: path.join(dir, 'ca-cert.pem'), key: path.join(dir, 'ca-key.pem') };
}

/**
 * A credentials directory for one endpoint: `ca`'s certificate as ca-cert.pem (what the endpoint
 * trusts: `trust`, default `ca`) and a certificate signed by `ca` for `names` (IP addresses and DNS
 * names, in subjectAltName).
 */
export function makeCreds(ca: TestCa, endpoint: 'server' | 'client', names: string[], trust: TestCa = ca): string {
  const dir = mkdtempSync(path.join(tmpdir(), `tsvmm-tls-${endpoint}-`));
  mkdirSync(dir, { recursive: true });
  copyFileSync(trust.cert, path.join(dir, 'ca-cert.pem'));
  const san = names.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
  writeFileSync(path.join(dir, 'ext.cnf'), `subjectAltName=${san}\nextendedKeyUsage=${endpoint === 'server' ? 'serverAuth' : 'clientAuth'}\n`);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${names[0]}`, '-keyout', `${endpoint}-key.pem`, '-out', 'req.pem'], dir);
  openssl(['x509', '-req', '-in', 'req.pem', '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-extfile', 'ext.cnf', '-out', `${endpoint}-cert.pem`], dir);
  return dir;
}
