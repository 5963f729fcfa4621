// Drives the DatoCMS dialect with DatoCMS's official client (@datocms/cma-client-node):
// lists a record's versions (plainly and with the paged iterator), restores the oldest one
// (the client polls the job result itself), reads the record back, and prints one JSON
// object for tests/e2e/test_dato_client.py.
//
// Usage: node restore.js <baseUrl> <apiToken> <itemId>
'use strict';

const { buildClient } = require('@datocms/cma-client-node');

async function main() {
  const [baseUrl, apiToken, itemId] = process.argv.slice(2);
  const client = buildClient({ apiToken, baseUrl });
  const before = await client.itemVersions.list(itemId);
  const paged = [];
  for await (const version of client.itemVersions.listPagedIterator(itemId, {}, { perPage: 2 })) {
    paged.push(version.id);
  }
  const oldest = before[before.length - 1];
  const restored = await client.itemVersions.restore(oldest.id);
  const item = await client.items.find(itemId);
  const after = await client.itemVersions.list(itemId);
  const version = await client.itemVersions.find(after[0].id);
  let missing = null;
  try {
    await client.items.find('no-such-item');
  } catch (error) {
    missing = { status: error.response.status, codes: error.errors.map((e) => e.attributes.code) };
  }
  process.stdout.write(JSON.stringify({ before, paged, oldest, restored, item, after, version, missing }));
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
