// Test OpenID Provider for the integration tests: oidc-provider (panva, OpenID Certified)
// configured for loopback use. Started by ../start-op.sh, which passes the state directory
// as argv[2] and the port as OP_LISTEN_PORT. Everything else is an OP_* knob (listed at the
// top of start-op.sh). Storage is the library's in-memory adapter: a restart forgets
// every grant, session and token; only the signing keys persist (STATE/op/op-keys.json).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import * as jose from 'jose';
import Provider, { errors, interactionPolicy } from 'oidc-provider';

// ---------------------------------------------------------------------------------------
// inputs

const env = process.env;
const STATE_DIR = path.resolve(process.argv[2] || '.');
const PORT = Number.parseInt(env.OP_LISTEN_PORT || '0', 10);
if (!Number.isInteger(PORT) || PORT <= 0 || PORT > 65535) {
  console.error(`op: OP_LISTEN_PORT must be a port number, got ${JSON.stringify(env.OP_LISTEN_PORT)}`);
  process.exit(2);
}
const ISSUER = (env.OP_ISSUER_URL || `http://127.0.0.1:${PORT}`).replace(/\/+$/, '');

function intEnv(name, dflt) {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number.parseInt(raw, 10);
  if (!Number.isInteger(n) || n <= 0 || String(n) !== raw.trim()) {
    console.error(`op: ${name} must be a positive integer, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

function oneOf(name, allowed, dflt) {
  const v = env[name] || dflt;
  if (!allowed.includes(v)) {
    console.error(`op: ${name} must be one of ${allowed.join('|')}, got ${JSON.stringify(v)}`);
    process.exit(2);
  }
  return v;
}

const AT_TTL = intEnv('OP_AT_TTL', 60);
const RT_TTL = intEnv('OP_RT_TTL', 86400);
const DEVICE_TTL = intEnv('OP_DEVICE_TTL', 600);
const RT_ROTATE = oneOf('OP_RT_ROTATE', ['default', 'always', 'never'], 'default');
const ISSUE_RT = oneOf('OP_ISSUE_RT', ['offline_access', 'always'], 'offline_access');
const AUTO_CONSENT = oneOf('OP_AUTO_CONSENT', ['0', '1'], '1') === '1';
const JWT_ALG = oneOf('OP_JWT_ALG', ['RS256', 'ES256'], 'RS256');
const DEFAULT_RESOURCE = oneOf('OP_DEFAULT_RESOURCE', ['api', 'none'], 'api');
const TOKEN_VER = env.OP_TOKEN_VER || '';
// Holds every token request this long before handling it (the grant is not yet used), so a
// test can kill a client while its refresh is in flight.
const TOKEN_DELAY_MS = intEnv('OP_TOKEN_DELAY_MS', 0);
// Holds each refresh grant's answer this long AFTER it was handled (the refresh token is
// already rotated), so a test can kill a client before it learns the new one.
const REFRESH_HOLD_MS = intEnv('OP_REFRESH_HOLD_MS', 0);
// A refresh-token reuse grace as some providers have (Auth0's reuse interval, Okta's grace
// period): for this many seconds a rotated refresh token presented again gets the answer its
// first use got, instead of invalid_grant and a revoked grant.
const RT_REUSE_GRACE = intEnv('OP_RT_REUSE_GRACE', 0);
const rotatedAnswers = new Map(); // refresh token -> { body, at }

const API_RESOURCE = 'https://api.test.example';
const OPAQUE_RESOURCE = 'urn:test:opaque-api';
const STATIC_RS_SCOPES = ['read', 'write', 'storage.read:/', 'storage.create:/', 'compute.read'];
// WLCG-profile style scopes with a path are accepted for any path the client asks for.
const DYNAMIC_SCOPES = new RegExp(env.OP_DYNAMIC_SCOPES
  || '^(storage\\.(read|create|modify|stage):/\\S*|compute\\.(read|modify|create|cancel)(:/\\S*)?)$');

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TT_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const TT_JWT = 'urn:ietf:params:oauth:token-type:jwt';
const RS_CLIENT_ID = 'resource-server';

// ---------------------------------------------------------------------------------------
// logging (stdout/stderr go to STATE/op.log, see start-op.sh). Never log token values.

function log(...parts) {
  console.log(new Date().toISOString(), ...parts);
}

// ---------------------------------------------------------------------------------------
// signing keys: generated on first start, then reused so that a restarted OP keeps its kids.
// The kid carries a random suffix per key set so verifiers that cache keys by (issuer, kid)
// never confuse two test runs.

function loadOrCreateKeys() {
  const file = path.join(STATE_DIR, 'op-keys.json');
  try {
    const jwks = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (Array.isArray(jwks.keys) && jwks.keys.some((k) => k.alg === 'RS256') && jwks.keys.some((k) => k.alg === 'ES256')) {
      return jwks;
    }
    log(`op: ${file} lacks an RS256 or ES256 key, regenerating`);
  } catch (err) {
    if (err.code !== 'ENOENT') log(`op: cannot read ${file} (${err.message}), regenerating`);
  }
  const suffix = crypto.randomBytes(6).toString('hex');
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const jwks = {
    keys: [
      { ...rsa, kid: `rs256-${suffix}`, alg: 'RS256', use: 'sig' },
      { ...ec, kid: `es256-${suffix}`, alg: 'ES256', use: 'sig' },
    ],
  };
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
  log(`op: generated signing keys ${jwks.keys.map((k) => k.kid).join(' ')}`);
  return jwks;
}

const JWKS = loadOrCreateKeys();
const PUBLIC_JWKS = {
  keys: JWKS.keys.map(({ kty, crv, x, y, n, e, kid, alg, use }) => (
    Object.fromEntries(Object.entries({ kty, crv, x, y, n, e, kid, alg, use }).filter(([, v]) => v !== undefined))
  )),
};
const localKeySet = jose.createLocalJWKSet(PUBLIC_JWKS);

// ---------------------------------------------------------------------------------------
// clients

const clients = [
  {
    client_id: 'device-client',
    client_name: 'device-client',
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
    response_types: [],
    redirect_uris: [],
  },
  {
    client_id: 'cli-client',
    client_name: 'cli-client',
    // native + loopback redirect URIs: any port matches (RFC 8252 section 7.3)
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback', 'http://[::1]/callback'],
  },
  {
    client_id: 'robot-client',
    client_secret: env.OP_ROBOT_SECRET || 'robot-secret',
    client_name: 'robot-client',
    // native only so that the loopback redirect URIs accept any port; it is confidential
    application_type: 'native',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [
      'client_credentials', 'authorization_code', 'refresh_token',
      'urn:ietf:params:oauth:grant-type:device_code', TOKEN_EXCHANGE,
    ],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback', 'http://[::1]/callback'],
  },
  {
    client_id: 'robot-client-post',
    client_secret: env.OP_ROBOT_POST_SECRET || 'robot-post-secret',
    client_name: 'robot-client-post',
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: ['client_credentials', TOKEN_EXCHANGE],
    response_types: [],
    redirect_uris: [],
  },
  {
    client_id: RS_CLIENT_ID,
    client_secret: env.OP_RS_SECRET || 'rs-secret',
    client_name: RS_CLIENT_ID,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [],
    response_types: [],
    redirect_uris: [],
  },
];

if (env.OP_CLIENTS_FILE) {
  const extra = JSON.parse(fs.readFileSync(env.OP_CLIENTS_FILE, 'utf8'));
  if (!Array.isArray(extra)) throw new TypeError('OP_CLIENTS_FILE must hold a JSON array of client metadata');
  clients.push(...extra);
}

// ---------------------------------------------------------------------------------------
// resource servers

// Scopes the current request has in play (request parameter, or the code / device code /
// refresh token being redeemed), so that dynamic scopes survive to the token endpoint.
function scopesInPlay(ctx) {
  const out = new Set();
  const add = (s) => { if (typeof s === 'string') for (const x of s.split(' ')) if (x) out.add(x); };
  const oidc = ctx?.oidc;
  if (oidc) {
    try { add(oidc.params?.scope); } catch { /* no params on this route */ }
    for (const kind of ['AuthorizationCode', 'DeviceCode', 'RefreshToken']) add(oidc.entities?.[kind]?.scope);
  }
  return out;
}

function resourceServerInfo(indicator, scopes) {
  let format;
  if (indicator === API_RESOURCE) format = 'jwt';
  else if (indicator === OPAQUE_RESOURCE) format = 'opaque';
  else throw new errors.InvalidTarget(`unknown resource indicator ${indicator}`);
  const scope = new Set(STATIC_RS_SCOPES);
  for (const s of scopes) if (DYNAMIC_SCOPES.test(s)) scope.add(s);
  return {
    audience: indicator,
    scope: [...scope].join(' '),
    accessTokenTTL: AT_TTL,
    accessTokenFormat: format,
    ...(format === 'jwt' ? { jwt: { sign: { alg: JWT_ALG } } } : {}),
  };
}

// ---------------------------------------------------------------------------------------
// interaction policy

const policy = interactionPolicy.base();
if (AUTO_CONSENT) {
  // Policy: the library always asks native clients for consent. Tests drive a headless
  // browser, so with OP_AUTO_CONSENT=1 only the login page remains (prompt=consent still
  // shows the consent page, which is what makes offline_access stick in the code flow).
  policy.get('consent').checks.remove('native_client_prompt');
}

async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
  let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
  if (!AUTO_CONSENT) return grant;

  // Policy: auto-consent = the user agrees to whatever the client asked for.
  grant ||= new oidc.provider.Grant({ accountId: oidc.account.accountId, clientId: oidc.client.clientId });
  const oidcScopes = [...oidc.requestParamOIDCScopes];
  if (oidcScopes.length) grant.addOIDCScope(oidcScopes.join(' '));
  const claims = [...oidc.requestParamClaims];
  if (claims.length) grant.addOIDCClaims(claims);
  for (const [indicator, rs] of Object.entries(oidc.resourceServers)) {
    const wanted = [...oidc.requestParamScopes].filter((s) => rs.scopes.has(s));
    if (wanted.length) grant.addResourceScope(indicator, wanted.join(' '));
  }
  await grant.save();
  return grant;
}

// ---------------------------------------------------------------------------------------
// provider

const configuration = {
  clients,
  jwks: JWKS,
  responseTypes: ['code'],
  clientDefaults: {
    grant_types: ['authorization_code'],
    id_token_signed_response_alg: JWT_ALG,
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return {
          sub, name: sub, preferred_username: sub, email: `${sub}@test.example`, email_verified: true,
        };
      },
    };
  },
  features: {
    devInteractions: { enabled: true }, // login form: any login name, any password
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: {
      enabled: true,
      async allowedPolicy(ctx, client, token) {
        // Policy: the resource-server client may revoke any token (tests use it as an
        // administrator); other clients only their own tokens, as in the library default.
        if (client.clientId === RS_CLIENT_ID || token.clientId === client.clientId) return true;
        if (client.clientAuthMethod === 'none') return false;
        throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
      },
    },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Policy: a request that names no resource gets the JWT API resource, so every flow
      // yields an RFC 9068 access token unless OP_DEFAULT_RESOURCE=none.
      async defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf;
        return DEFAULT_RESOURCE === 'none' ? undefined : API_RESOURCE;
      },
      // ...and keeps it at the token endpoint even when openid was requested (the library
      // default would then issue an opaque userinfo-only token).
      async useGrantedResource() {
        return DEFAULT_RESOURCE !== 'none';
      },
      async getResourceServerInfo(ctx, indicator) {
        return resourceServerInfo(indicator, scopesInPlay(ctx));
      },
    },
  },
  interactions: { policy },
  loadExistingGrant,
  ...(ISSUE_RT === 'always' ? {
    // Policy knob: refresh tokens for every client allowed the refresh_token grant, not
    // only when offline_access was granted; such tokens do not end with the login session.
    async issueRefreshToken(ctx, client) { return client.grantTypeAllowed('refresh_token'); },
    async expiresWithSession() { return false; },
  } : {}),
  ...(RT_ROTATE === 'default' ? {} : { rotateRefreshToken: () => RT_ROTATE === 'always' }),
  async extraTokenClaims(ctx, token) {
    // token.extra is set by the token-exchange handler (act); ver is the SciToken profile knob
    const extra = { ...(token.extra || {}) };
    if (TOKEN_VER) extra.ver = TOKEN_VER;
    return Object.keys(extra).length ? extra : undefined;
  },
  ttl: {
    AccessToken: AT_TTL,
    ClientCredentials: AT_TTL,
    AuthorizationCode: 60,
    DeviceCode: DEVICE_TTL,
    IdToken: 3600,
    RefreshToken: RT_TTL,
    Interaction: 3600,
    Grant: Math.max(RT_TTL, 14 * 24 * 3600),
    Session: Math.max(RT_TTL, 14 * 24 * 3600),
  },
};

const provider = new Provider(ISSUER, configuration);

// ---------------------------------------------------------------------------------------
// token exchange (RFC 8693); not part of oidc-provider

// The library's invalid_grant always says "grant request is invalid"; ours says why.
function invalidGrant(description) {
  return Object.assign(new errors.InvalidGrant(description), { error_description: description });
}

function single(value, name) {
  if (value === undefined) return undefined;
  const list = [...new Set(Array.isArray(value) ? value : [value])];
  if (list.length > 1) throw new errors.InvalidTarget(`only one ${name} value is supported`);
  return list[0];
}

// Returns { sub, scope, act } of a valid access token issued by this OP, or throws.
async function resolveSubjectToken(value) {
  const invalid = (why) => invalidGrant(`subject_token is invalid: ${why}`);
  if (/^[\w-]+\.[\w-]+\.[\w-]+$/.test(value)) {
    try {
      const { payload } = await jose.jwtVerify(value, localKeySet, { issuer: ISSUER, typ: 'at+jwt' });
      if (!payload.sub) throw invalid('no sub claim');
      return { sub: payload.sub, scope: payload.scope || '', act: payload.act };
    } catch (err) {
      if (err instanceof errors.InvalidGrant) throw err;
      throw invalid(err.code || err.message);
    }
  }
  const at = await provider.AccessToken.find(value);
  if (at) {
    if (at.grantId && !(await provider.Grant.find(at.grantId))) throw invalid('its grant was revoked');
    return { sub: at.accountId, scope: at.scope || '', act: at.extra?.act };
  }
  const cc = await provider.ClientCredentials.find(value);
  if (cc) return { sub: cc.clientId, scope: cc.scope || '', act: cc.extra?.act };
  throw invalid('unknown, expired or revoked');
}

async function tokenExchange(ctx) {
  const { params, client } = ctx.oidc;
  for (const p of ['subject_token', 'subject_token_type']) {
    if (!params[p]) throw new errors.InvalidRequest(`missing required parameter '${p}'`);
  }
  if (![TT_ACCESS_TOKEN, TT_JWT].includes(params.subject_token_type)) {
    throw new errors.InvalidRequest(`unsupported subject_token_type (use ${TT_ACCESS_TOKEN})`);
  }
  if (params.requested_token_type && ![TT_ACCESS_TOKEN, TT_JWT].includes(params.requested_token_type)) {
    throw new errors.InvalidRequest(`unsupported requested_token_type (only ${TT_ACCESS_TOKEN} is issued)`);
  }
  if (params.actor_token || params.actor_token_type) {
    // Policy: delegation is expressed by the authenticated client alone (act.sub = client_id).
    throw new errors.InvalidRequest('actor_token is not supported by this OP');
  }

  const subject = await resolveSubjectToken(params.subject_token);

  // target: resource wins over audience; both must name a known resource indicator
  const resource = single(params.resource, 'resource') ?? single(params.audience, 'audience') ?? API_RESOURCE;
  const held = new Set(subject.scope.split(' ').filter(Boolean));
  const requested = params.scope ? [...ctx.oidc.requestParamScopes] : [...held];
  const notHeld = requested.filter((s) => !held.has(s));
  if (notHeld.length) {
    throw new errors.InvalidScope(`subject_token does not hold the requested scope: ${notHeld.join(' ')}`, notHeld.join(' '));
  }
  const info = resourceServerInfo(resource, requested);
  const rs = new provider.ResourceServer(resource, info);
  const scope = requested.filter((s) => rs.scopes.has(s)).join(' ') || undefined;

  const act = subject.act ? { sub: client.clientId, act: subject.act } : { sub: client.clientId };
  const at = new provider.AccessToken({
    accountId: subject.sub,
    client,
    gty: 'token-exchange',
    scope,
    extra: { act },
  });
  at.resourceServer = rs;
  ctx.oidc.entity('AccessToken', at);
  const value = await at.save();

  ctx.body = {
    access_token: value,
    issued_token_type: TT_ACCESS_TOKEN,
    token_type: 'Bearer',
    expires_in: at.expiration,
    ...(scope ? { scope } : {}),
  };
}

provider.registerGrantType(
  TOKEN_EXCHANGE,
  tokenExchange,
  ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type',
    'audience', 'resource', 'scope'],
  ['audience', 'resource'],
);

// ---------------------------------------------------------------------------------------
// request + event log

provider.use(async (ctx, next) => {
  const started = Date.now();
  // lets start-op.sh tell this process apart from anything else answering on the port
  ctx.set('x-testbed-op-pid', String(process.pid));
  const isToken = ctx.method === 'POST' && ctx.path === '/token';
  if (TOKEN_DELAY_MS > 0 && isToken) {
    log(`token.delayed ${TOKEN_DELAY_MS}ms`);
    await new Promise((resolve) => setTimeout(resolve, TOKEN_DELAY_MS));
  }
  let refreshToken = null;
  if (isToken && (REFRESH_HOLD_MS > 0 || RT_REUSE_GRACE > 0)) {
    // Read the form here (oidc-provider takes an already parsed body) to see the grant.
    const raw = await new Promise((resolve, reject) => {
      const chunks = [];
      ctx.req.on('data', (c) => chunks.push(c));
      ctx.req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      ctx.req.on('error', reject);
    });
    const form = Object.fromEntries(new URLSearchParams(raw));
    ctx.request.body = form;
    if (form.grant_type === 'refresh_token') refreshToken = form.refresh_token || null;
  }
  try {
    const earlier = refreshToken && rotatedAnswers.get(refreshToken);
    if (earlier && Date.now() - earlier.at <= RT_REUSE_GRACE * 1000) {
      log(`token.reuse_grace ${Math.round((Date.now() - earlier.at) / 1000)}s`);
      ctx.status = 200;
      ctx.type = 'application/json';
      ctx.body = earlier.body;
      return;
    }
    await next();
    if (refreshToken && ctx.status === 200) {
      if (RT_REUSE_GRACE > 0) rotatedAnswers.set(refreshToken, { body: ctx.body, at: Date.now() });
      if (REFRESH_HOLD_MS > 0) {
        log(`token.refresh_held ${REFRESH_HOLD_MS}ms`);
        await new Promise((resolve) => setTimeout(resolve, REFRESH_HOLD_MS));
      }
    }
  } finally {
    log(`${ctx.method} ${ctx.path} ${ctx.status} ${Date.now() - started}ms`);
  }
});

const describe = (err) => [err.error || err.name, err.error_description, err.error_detail]
  .filter(Boolean).join(' | ');
for (const ev of ['grant.error', 'authorization.error', 'introspection.error', 'revocation.error',
  'device_authorization.error', 'code_verification.error', 'device_resume.error', 'userinfo.error',
  'end_session.error']) {
  provider.on(ev, (ctx, err) => log(`${ev} client=${ctx?.oidc?.client?.clientId ?? '-'} ${describe(err)}`));
}
provider.on('server_error', (ctx, err) => log(`server_error ${err.stack || err}`));
provider.on('grant.success', (ctx) => log(`grant.success client=${ctx.oidc.client?.clientId} grant_type=${ctx.oidc.params?.grant_type}`));
provider.on('grant.revoked', (ctx, grantId) => log(`grant.revoked ${grantId}`));
provider.on('interaction.started', (ctx, prompt) => log(`interaction.started prompt=${prompt.name} reasons=${prompt.reasons.join(',')}`));

// ---------------------------------------------------------------------------------------
// start

// Static clients are validated lazily by the library; validate them now so a bad
// configuration fails the start instead of the first test.
for (const c of clients) {
  // eslint-disable-next-line no-await-in-loop
  await provider.Client.find(c.client_id);
}

const server = provider.listen(PORT, '127.0.0.1', () => {
  log(`op: listening on 127.0.0.1:${PORT} issuer=${ISSUER} jwt_alg=${JWT_ALG} at_ttl=${AT_TTL} rt_ttl=${RT_TTL} `
    + `rt_rotate=${RT_ROTATE} issue_rt=${ISSUE_RT} auto_consent=${AUTO_CONSENT ? 1 : 0} `
    + `default_resource=${DEFAULT_RESOURCE} token_ver=${TOKEN_VER || '-'} pid=${process.pid}`);
});
server.on('error', (err) => {
  log(`op: cannot listen on 127.0.0.1:${PORT}: ${err.code || err.message}`);
  process.exit(err.code === 'EADDRINUSE' ? 3 : 1);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    log(`op: ${sig}, exiting`);
    process.exit(0);
  });
}
