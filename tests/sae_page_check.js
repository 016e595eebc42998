// sae_page_check.js - runs the script of a `lumen sae features` index.html under node with a
// minimal DOM stand-in, renders the list and the card of one latent, and prints what it drew:
//   rows N / card TITLE / contexts N / marked TOKEN
// Usage: node sae_page_check.js index.html ID   (used by test_sae_features_cli.sh when node exists)
'use strict';
const fs = require('fs');
const html = fs.readFileSync(process.argv[2], 'utf8');
const id = parseInt(process.argv[3], 10);
const m = html.match(/<script id="data" type="application\/json">([\s\S]*?)<\/script>\n<script>\n([\s\S]*?)<\/script>/);
if (!m) { console.log('no data or script element'); process.exit(1); }
function node(tag) {
  return {
    tag, children: [], className: '', style: {}, dataset: {}, value: '', checked: false, _t: '',
    classList: { add() {}, remove() {} },
    appendChild(c) { this.children.push(c); return c; },
    set textContent(v) { this._t = String(v); this.children = []; },
    get textContent() { return this._t; },
  };
}
const els = { data: { textContent: m[1] } };
['rows', 'count', 'card', 'dmin', 'dmax', 'mmin', 'dead', 'q'].forEach(k => { els[k] = node('x'); });
global.document = {
  getElementById: k => els[k] || null, createElement: node, createTextNode: t => ({ t }), querySelectorAll: () => [],
};
global.location = { hash: '#f' + id };
global.window = {};
eval(m[2]);
const card = els.card.children;
const ctxs = card.filter(c => c.className === 'ctx');
console.log('rows ' + els.rows.children.length);
console.log('card ' + (card.length ? card[0]._t : ''));
console.log('contexts ' + ctxs.length);
if (ctxs.length) {
  const marked = ctxs[0].children[1].children.filter(s => s.className === 'tk at');
  console.log('marked ' + (marked.length === 1 ? JSON.stringify(marked[0]._t) : 'none'));
}
