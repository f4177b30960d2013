// Reads a JSON array of file paths on stdin; prints a JSON array with, for
// each file, what Node's `dotenv` returns for it: dotenv.parse() of the
// file's bytes (a Buffer, as dotenv.config() passes the file's contents).
// {"values": {...}, "error": null} or {"values": null, "error": "..."}.
// DOTENV_MODULE names the installed module (default: `dotenv` on NODE_PATH).
'use strict'
const fs = require('fs')
const dotenv = require(process.env.DOTENV_MODULE || 'dotenv')

const paths = JSON.parse(fs.readFileSync(0, 'utf8'))
const out = paths.map((p) => {
  try {
    const parsed = dotenv.parse(fs.readFileSync(p))
    return { values: Object.assign({}, parsed), error: null }
  } catch (e) {
    return { values: null, error: String(e && e.message ? e.message : e) }
  }
})
process.stdout.write(JSON.stringify({
  version: require((process.env.DOTENV_MODULE || 'dotenv') + '/package.json').version,
  results: out
}))
