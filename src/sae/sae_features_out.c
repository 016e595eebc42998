/* sae_features_out.c - the outputs of lm_sae_features_compute: features.json, the static HTML feature
 * browser (index.html) and feature_stats.safetensors, plus the display text of a token and the
 * SAE checksum that ties the statistics to their SAE (definitions in sae.h). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lumen/format.h"
#include "lumen/sae.h"
#include "lumen/tokenizer.h"

char *lm_sae_token_display(const lm_tokenizer *tok, int prev, int id) {
    char buf[16];
    size_t len = 0;
    const char *s = lm_tokenizer_token_text(tok, prev, id, buf, &len);
    if (len == 0) s = lm_tokenizer_piece(tok, id, &len); /* special tokens: show their piece */
    char *out = malloc(len * 6 + 1); /* "<0xHH>" per byte at most */
    if (!out) return NULL;
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t k = lm_utf8_len(u + i, len - i);
        if (k == 0) {
            o += (size_t)snprintf(out + o, 7, "<0x%02X>", u[i]);
            i++;
        } else {
            memcpy(out + o, u + i, k);
            o += k;
            i += k;
        }
    }
    out[o] = 0;
    return out;
}

uint64_t lm_sae_checksum(const lm_sae *sae) {
    uint64_t h = 0xcbf29ce484222325ull;
    uint64_t dims[5] = {(uint64_t)sae->arch, sae->d_in, sae->d_sae, sae->k, (uint64_t)sae->apply_b_dec_to_input};
    const unsigned char *p = (const unsigned char *)dims;
    for (size_t i = 0; i < sizeof dims; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    p = (const unsigned char *)sae->params;
    for (size_t i = 0; i < sae->n_params * sizeof(float); i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static lm_status mkdir_p(const char *dir) {
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path) return lm_fail(LM_ERR_ARG, "%s: bad directory name", dir);
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != 0) continue;
        char c = path[i];
        path[i] = 0;
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return lm_fail(LM_ERR_IO, "%s: cannot create directory: %s", path, strerror(errno));
        path[i] = c;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return lm_fail(LM_ERR_IO, "%s: not a directory", dir);
    return LM_OK;
}

/* A display string as a JSON string (never NULL on success). */
static json_t *jtok(const lm_tokenizer *tok, int prev, int id) {
    char *s = lm_sae_token_display(tok, prev, id);
    json_t *j = s ? json_string(s) : NULL;
    free(s);
    return j;
}

/* An activation: 0 as the integer 0 (shorter), other values as reals. */
static json_t *jact(float v) { return v == 0.0f ? json_integer(0) : json_real((double)v); }

static json_t *ctx_json(const lm_tokenizer *tok, const lm_sae_context *c) {
    json_t *o = json_object(), *ids = json_array(), *ts = json_array(), *as = json_array();
    json_object_set_new(o, "pos", json_integer((json_int_t)c->pos));
    json_object_set_new(o, "act", json_real((double)c->act));
    json_object_set_new(o, "at", json_integer(c->at));
    for (uint32_t k = 0; k < c->len; k++) {
        json_array_append_new(ids, json_integer(c->tokens[k]));
        json_array_append_new(ts, jtok(tok, k ? c->tokens[k - 1] : c->prev, c->tokens[k]));
        json_array_append_new(as, jact(c->acts[k]));
    }
    json_object_set_new(o, "ids", ids);
    json_object_set_new(o, "tokens", ts);
    json_object_set_new(o, "acts", as);
    return o;
}

/* The compact context of the HTML page: [pos, at, act, [ids], [acts]] */
static json_t *ctx_compact(const lm_sae_context *c) {
    json_t *ids = json_array(), *as = json_array();
    for (uint32_t k = 0; k < c->len; k++) {
        json_array_append_new(ids, json_integer(c->tokens[k]));
        json_array_append_new(as, jact(c->acts[k]));
    }
    return json_pack("[I,i,f,o,o]", (json_int_t)c->pos, (int)c->at, (double)c->act, ids, as);
}

static void meta_fields(json_t *o, const lm_sae_features *f, const lm_sae *sae, const lm_sae_features_meta *meta) {
    json_object_set_new(o, "model", meta && meta->model ? json_string(meta->model) : json_null());
    json_object_set_new(o, "sae", meta && meta->sae ? json_string(meta->sae) : json_null());
    json_object_set_new(o, "text", meta && meta->text ? json_string(meta->text) : json_null());
    json_object_set_new(o, "hook", json_string(f->hook));
    json_object_set_new(o, "d_sae", json_integer((json_int_t)f->d_sae));
    json_object_set_new(o, "d_in", json_integer((json_int_t)sae->d_in));
    json_object_set_new(o, "tokens", json_integer((json_int_t)f->n_tokens));
    json_object_set_new(o, "windows", json_integer((json_int_t)f->n_windows));
    json_object_set_new(o, "ctx", json_integer(f->ctx));
    json_object_set_new(o, "before", json_integer(f->before));
    json_object_set_new(o, "after", json_integer(f->after));
    json_object_set_new(o, "intervals", json_integer((json_int_t)f->n_intervals));
}

static json_t *features_json(const lm_sae_features *f, const lm_sae *sae, const lm_tokenizer *tok,
                             const lm_sae_features_meta *meta) {
    json_t *root = json_object(), *arr = json_array();
    json_object_set_new(root, "format", json_string("lumen-sae-features"));
    json_object_set_new(root, "version", json_integer(1));
    meta_fields(root, f, sae, meta);
    size_t Q = f->n_intervals, S = f->n_per_interval, K = f->n_logits, NB = f->n_neighbours;
    for (size_t i = 0; i < f->d_sae; i++) {
        json_t *o = json_object(), *top = json_array(), *iv = json_array(), *lt = json_array(), *lb = json_array(),
               *nb = json_array();
        json_object_set_new(o, "id", json_integer((json_int_t)i));
        json_object_set_new(o, "density", json_real(f->density[i]));
        json_object_set_new(o, "fired", json_integer((json_int_t)f->n_fired[i]));
        json_object_set_new(o, "max_act", json_real(f->max_act[i]));
        json_object_set_new(o, "mean_act", json_real(f->mean_act[i]));
        for (uint32_t k = 0; k < f->top_count[i]; k++) json_array_append_new(top, ctx_json(tok, &f->top[i * f->n_top + k]));
        if (f->max_act[i] > 0)
            for (size_t q = 0; q < Q; q++) {
                size_t iq = i * Q + q;
                json_t *s = json_array();
                for (uint32_t k = 0; k < f->sample_count[iq]; k++)
                    json_array_append_new(s, ctx_json(tok, &f->samples[iq * S + k]));
                json_array_append_new(iv, json_pack("{s:f,s:f,s:I,s:o}", "lo", (double)f->max_act[i] * (double)q / (double)Q,
                                                    "hi", (double)f->max_act[i] * (double)(q + 1) / (double)Q, "count",
                                                    (json_int_t)f->interval_count[iq], "samples", s));
            }
        for (size_t k = 0; k < K; k++) {
            int a = f->logit_top_id[i * K + k], b = f->logit_bottom_id[i * K + k];
            json_array_append_new(lt, json_pack("{s:o,s:i,s:f}", "token", jtok(tok, a == 0 ? 1 : 0, a), "id", a, "value",
                                                (double)f->logit_top[i * K + k]));
            json_array_append_new(lb, json_pack("{s:o,s:i,s:f}", "token", jtok(tok, b == 0 ? 1 : 0, b), "id", b, "value",
                                                (double)f->logit_bottom[i * K + k]));
        }
        for (size_t k = 0; k < NB; k++)
            json_array_append_new(nb, json_pack("{s:i,s:f}", "id", f->neighbour_id[i * NB + k], "cos",
                                                (double)f->neighbour_cos[i * NB + k]));
        json_object_set_new(o, "top", top);
        json_object_set_new(o, "intervals", iv);
        json_object_set_new(o, "logits_top", lt);
        json_object_set_new(o, "logits_bottom", lb);
        json_object_set_new(o, "neighbours", nb);
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "features", arr);
    return root;
}

/* The page's data: meta, "vocab" {id: display text} of every token shown, and per latent
 * {i, d (density), n (fired), m (max), a (mean), t (top contexts), q ([lo, hi, count, [contexts]]
 * per interval), lt/lb ([[id, value]...]), nb ([[id, cos]...])}. */
static json_t *page_json(const lm_sae_features *f, const lm_sae *sae, const lm_tokenizer *tok,
                         const lm_sae_features_meta *meta) {
    json_t *root = json_object(), *arr = json_array(), *vocab = json_object();
    meta_fields(root, f, sae, meta);
    size_t Q = f->n_intervals, S = f->n_per_interval, K = f->n_logits, NB = f->n_neighbours;
    int nv = lm_tokenizer_vocab_size(tok);
    uint8_t *used = calloc(nv > 0 ? (size_t)nv : 1, 1);
    if (!used) {
        json_decref(root);
        json_decref(arr);
        json_decref(vocab);
        return NULL;
    }
#define USE(id)                                          \
    do {                                                 \
        if ((id) >= 0 && (id) < nv) used[(id)] = 1;      \
    } while (0)
    for (size_t i = 0; i < f->d_sae; i++) {
        json_t *top = json_array(), *iv = json_array(), *lt = json_array(), *lb = json_array(), *nb = json_array();
        for (uint32_t k = 0; k < f->top_count[i]; k++) {
            const lm_sae_context *c = &f->top[i * f->n_top + k];
            for (uint32_t t = 0; t < c->len; t++) USE(c->tokens[t]);
            json_array_append_new(top, ctx_compact(c));
        }
        if (f->max_act[i] > 0)
            for (size_t q = 0; q < Q; q++) {
                size_t iq = i * Q + q;
                json_t *s = json_array();
                for (uint32_t k = 0; k < f->sample_count[iq]; k++) {
                    const lm_sae_context *c = &f->samples[iq * S + k];
                    for (uint32_t t = 0; t < c->len; t++) USE(c->tokens[t]);
                    json_array_append_new(s, ctx_compact(c));
                }
                json_array_append_new(iv, json_pack("[f,f,I,o]", (double)f->max_act[i] * (double)q / (double)Q,
                                                    (double)f->max_act[i] * (double)(q + 1) / (double)Q,
                                                    (json_int_t)f->interval_count[iq], s));
            }
        for (size_t k = 0; k < K; k++) {
            USE(f->logit_top_id[i * K + k]);
            USE(f->logit_bottom_id[i * K + k]);
            json_array_append_new(lt, json_pack("[i,f]", f->logit_top_id[i * K + k], (double)f->logit_top[i * K + k]));
            json_array_append_new(lb,
                                  json_pack("[i,f]", f->logit_bottom_id[i * K + k], (double)f->logit_bottom[i * K + k]));
        }
        for (size_t k = 0; k < NB; k++)
            json_array_append_new(nb, json_pack("[i,f]", f->neighbour_id[i * NB + k], (double)f->neighbour_cos[i * NB + k]));
        json_array_append_new(arr, json_pack("{s:I,s:f,s:I,s:f,s:f,s:o,s:o,s:o,s:o,s:o}", "i", (json_int_t)i, "d",
                                             (double)f->density[i], "n", (json_int_t)f->n_fired[i], "m",
                                             (double)f->max_act[i], "a", (double)f->mean_act[i], "t", top, "q", iv,
                                             "lt", lt, "lb", lb, "nb", nb));
    }
#undef USE
    for (int id = 0; id < nv; id++)
        if (used[id]) {
            char key[16];
            snprintf(key, sizeof key, "%d", id);
            json_object_set_new(vocab, key, jtok(tok, id == 0 ? 1 : 0, id));
        }
    free(used);
    json_object_set_new(root, "vocab", vocab);
    json_object_set_new(root, "f", arr);
    return root;
}

/* Appends s (n bytes) to a growing buffer. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = (b->cap + n + 1) * 2;
        char *q = realloc(b->p, nc);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_html(sbuf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': sb_str(b, "&lt;"); break;
        case '>': sb_str(b, "&gt;"); break;
        case '&': sb_str(b, "&amp;"); break;
        case '"': sb_str(b, "&quot;"); break;
        case '\'': sb_str(b, "&#39;"); break;
        default: sb_add(b, s, 1);
        }
    }
}

static const char k_css[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}"
    "header{padding:8px 16px;background:#f4f4f4;border-bottom:1px solid #ddd}h1{font-size:18px;margin:0}"
    "#meta{color:#555;font-size:12px}#main{display:flex;height:calc(100vh - 64px)}"
    "#side{width:440px;overflow:auto;border-right:1px solid #ddd;padding:8px}"
    "#card{flex:1;overflow:auto;padding:8px 16px}.ctl{font-size:12px;margin-bottom:6px}"
    ".ctl input{width:70px}table{border-collapse:collapse;width:100%}"
    "td,th{padding:2px 6px;text-align:right;font-size:12px;white-space:nowrap}"
    "th{cursor:pointer;background:#eee;position:sticky;top:0}tr.row:hover{background:#eef}"
    "tr.sel{background:#dde}td.tt{text-align:left;font-family:monospace;overflow:hidden;max-width:160px}"
    ".ctx{font-family:monospace;white-space:pre;margin:1px 0;display:flex}"
    ".v{width:56px;color:#777;text-align:right;margin-right:8px;flex:none}"
    ".tk{border-radius:2px}.at{outline:2px solid #c00}"
    ".pills span{display:inline-block;font-family:monospace;white-space:pre;background:#eef;margin:2px;"
    "padding:0 4px;border-radius:3px}.pills.neg span{background:#fee}a{color:#24c;cursor:pointer}"
    "h2{font-size:16px;margin:8px 0}h3{font-size:13px;margin:10px 0 4px}.dim{color:#888}";

static const char k_js[] =
    "const D=JSON.parse(document.getElementById('data').textContent);const V=D.vocab,F=D.f;\n"
    "function el(t,c,x){const e=document.createElement(t);if(c)e.className=c;if(x!==undefined)e.textContent=x;return e}\n"
    "function tok(id){const s=V[id];return s===undefined?'?':s.replace(/\\n/g,'\\u21b5').replace(/\\t/g,'\\u2192')}\n"
    "function num(x,p){return x===0?'0':(Math.abs(x)<1e-3?x.toExponential(p-1):x.toPrecision(p))}\n"
    "function ctx(c,mx){const r=el('div','ctx');r.appendChild(el('span','v',num(c[2],3)));const t=el('span');\n"
    " c[3].forEach((id,k)=>{const a=c[4][k];const s=el('span',k===c[1]?'tk at':'tk',tok(id));\n"
    "  const w=mx>0?Math.max(0,Math.min(1,a/mx)):0;s.style.background='rgba(255,128,0,'+w.toFixed(3)+')';\n"
    "  s.title='activation '+a;t.appendChild(s)});r.appendChild(t);return r}\n"
    "function pills(a,cls){const d=el('div','pills'+(cls?' '+cls:''));a.forEach(p=>{const s=el('span',null,tok(p[0]));\n"
    " s.title=p[1].toFixed(4);d.appendChild(s)});return d}\n"
    "function show(i){const f=F[i];if(!f)return;const c=document.getElementById('card');c.textContent='';\n"
    " c.appendChild(el('h2',null,'feature '+f.i));\n"
    " c.appendChild(el('div',null,'density '+num(f.d,3)+' ('+f.n+' of '+D.tokens+' tokens), max activation '+num(f.m,4)+', mean '+num(f.a,4)));\n"
    " c.appendChild(el('h3',null,'logit effect: promotes'));c.appendChild(pills(f.lt));\n"
    " c.appendChild(el('h3',null,'suppresses'));c.appendChild(pills(f.lb,'neg'));\n"
    " c.appendChild(el('h3',null,'nearest latents (decoder cosine)'));const nb=el('div');\n"
    " f.nb.forEach(p=>{const a=el('a',null,p[0]+' ('+p[1].toFixed(2)+')');a.onclick=()=>{location.hash='f'+p[0]};\n"
    "  nb.appendChild(a);nb.appendChild(document.createTextNode(' '))});c.appendChild(nb);\n"
    " if(!f.t.length){c.appendChild(el('p','dim','dead on this text: no contexts'));return}\n"
    " c.appendChild(el('h3',null,'top activations'));f.t.forEach(x=>c.appendChild(ctx(x,f.m)));\n"
    " for(let q=f.q.length-1;q>=0;q--){const v=f.q[q];if(!v[3].length)continue;\n"
    "  c.appendChild(el('h3',null,'interval '+num(v[0],3)+' .. '+num(v[1],3)+' ('+v[2]+' tokens)'));\n"
    "  v[3].forEach(x=>c.appendChild(ctx(x,f.m)))}\n"
    " document.querySelectorAll('tr.sel').forEach(r=>r.classList.remove('sel'));\n"
    " const r=document.getElementById('r'+i);if(r)r.classList.add('sel')}\n"
    "let key='m',desc=true;\n"
    "function list(){const lo=parseFloat(document.getElementById('dmin').value),hi=parseFloat(document.getElementById('dmax').value),\n"
    " mlo=parseFloat(document.getElementById('mmin').value),dead=document.getElementById('dead').checked,\n"
    " q=document.getElementById('q').value;\n"
    " let a=F.filter(f=>(dead||f.n>0)&&!(f.d<lo)&&!(f.d>hi)&&!(f.m<mlo)&&\n"
    "  (!q||(f.t.length&&tok(f.t[0][3][f.t[0][1]]).includes(q))||f.lt.some(p=>tok(p[0]).includes(q))));\n"
    " a.sort((x,y)=>{const u=x[key],v=y[key];return (u<v?-1:u>v?1:x.i-y.i)*(desc?-1:1)});\n"
    " const tb=document.getElementById('rows');tb.textContent='';\n"
    " document.getElementById('count').textContent=a.length+' of '+F.length+' latents'+(a.length>1000?' (first 1000 shown)':'');\n"
    " a.slice(0,1000).forEach(f=>{const r=el('tr','row');r.id='r'+f.i;r.appendChild(el('td',null,f.i));\n"
    "  r.appendChild(el('td',null,num(f.d,3)));r.appendChild(el('td',null,num(f.m,3)));\n"
    "  r.appendChild(el('td','tt',f.t.length?tok(f.t[0][3][f.t[0][1]]):''));\n"
    "  r.appendChild(el('td','tt',f.lt.length?tok(f.lt[0][0]):''));r.onclick=()=>{location.hash='f'+f.i};tb.appendChild(r)})}\n"
    "document.querySelectorAll('th[data-k]').forEach(h=>h.onclick=()=>{const k=h.dataset.k;desc=k===key?!desc:true;key=k;list()});\n"
    "['dmin','dmax','mmin','dead','q'].forEach(id=>document.getElementById(id).oninput=list);\n"
    "window.onhashchange=()=>show(parseInt(location.hash.slice(2)));list();\n"
    "if(location.hash)show(parseInt(location.hash.slice(2)));else{const b=F.filter(f=>f.n>0).sort((x,y)=>y.m-x.m)[0];if(b)show(b.i)}\n";

static lm_status write_html(const char *path, json_t *data, const lm_sae_features *f, const lm_sae_features_meta *meta) {
    char *js = json_dumps(data, JSON_COMPACT | JSON_REAL_PRECISION(4));
    if (!js) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    sbuf b = {0};
    sb_str(&b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>SAE features: ");
    sb_html(&b, f->hook);
    sb_str(&b, "</title>\n<style>");
    sb_str(&b, k_css);
    sb_str(&b, "</style></head><body>\n<header><h1>SAE features at ");
    sb_html(&b, f->hook);
    sb_str(&b, "</h1><div id=\"meta\">");
    char line[256];
    snprintf(line, sizeof line, "%zu latents, %zu tokens in %zu windows of %d", f->d_sae, f->n_tokens, f->n_windows,
             f->ctx);
    sb_str(&b, line);
    const char *lab[3] = {"model", "SAE", "text"};
    const char *val[3] = {meta ? meta->model : NULL, meta ? meta->sae : NULL, meta ? meta->text : NULL};
    for (int k = 0; k < 3; k++)
        if (val[k]) {
            sb_str(&b, "; ");
            sb_str(&b, lab[k]);
            sb_str(&b, " ");
            sb_html(&b, val[k]);
        }
    sb_str(&b, "</div></header>\n<div id=\"main\"><div id=\"side\"><div class=\"ctl\">density <input id=\"dmin\" "
               "placeholder=\"min\"> to <input id=\"dmax\" placeholder=\"max\"> max act &ge; <input id=\"mmin\" "
               "placeholder=\"min\"> <label><input type=\"checkbox\" id=\"dead\">dead</label><br>token <input "
               "id=\"q\" style=\"width:120px\" placeholder=\"top token or logit\"> <span id=\"count\"></span></div>\n"
               "<table><thead><tr><th data-k=\"i\">id</th><th data-k=\"d\">density</th><th data-k=\"m\">max act</th>"
               "<th>top token</th><th>top logit</th></tr></thead><tbody id=\"rows\"></tbody></table></div>\n"
               "<div id=\"card\"><noscript>This page needs JavaScript to show the features.</noscript></div></div>\n"
               "<script id=\"data\" type=\"application/json\">");
    /* inside <script>, '<' could end or confuse the element: JSON only has it inside strings, where
     * \u003c means the same; '>' and '&' likewise for good measure */
    for (const char *p = js; *p; p++) {
        if (*p == '<') sb_str(&b, "\\u003c");
        else if (*p == '>') sb_str(&b, "\\u003e");
        else if (*p == '&') sb_str(&b, "\\u0026");
        else sb_add(&b, p, 1);
    }
    free(js);
    sb_str(&b, "</script>\n<script>\n");
    sb_str(&b, k_js);
    sb_str(&b, "</script></body></html>\n");
    lm_status st = b.oom ? lm_fail(LM_ERR_NOMEM, "%s: out of memory", path) : lm_write_file_atomic(path, b.p, b.n);
    free(b.p);
    return st;
}

lm_status lm_sae_features_write(const lm_sae_features *f, const lm_sae *sae, const lm_tokenizer *tok,
                                const lm_sae_features_meta *meta, const char *dir) {
    if (!tok) return lm_fail(LM_ERR_ARG, "sae features: a tokenizer is needed to write the token strings");
    if (f->d_sae != sae->d_sae) return lm_fail(LM_ERR_ARG, "sae features: the results are of another SAE");
    lm_status st = mkdir_p(dir);
    if (st != LM_OK) return st;
    char path[4200];
    /* feature_stats.safetensors */
    char sum[32], ntok[32];
    snprintf(sum, sizeof sum, "%016" PRIx64, lm_sae_checksum(sae));
    snprintf(ntok, sizeof ntok, "%zu", f->n_tokens);
    const char *md[] = {"format", "lumen-sae-feature-stats", "hook", f->hook, "sae_checksum", sum, "tokens", ntok};
    lm_st_spec specs[2] = {{"density", LM_ST_F32, 1, {f->d_sae}, f->density},
                           {"max_act", LM_ST_F32, 1, {f->d_sae}, f->max_act}};
    snprintf(path, sizeof path, "%s/feature_stats.safetensors", dir);
    st = lm_safetensors_write(path, specs, 2, md, 4);
    if (st != LM_OK) return st;
    /* features.json */
    json_t *j = features_json(f, sae, tok, meta);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(7)) : NULL;
    json_decref(j);
    snprintf(path, sizeof path, "%s/features.json", dir);
    if (!s) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    st = lm_write_file_atomic(path, s, strlen(s));
    free(s);
    if (st != LM_OK) return st;
    /* index.html */
    json_t *pj = page_json(f, sae, tok, meta);
    snprintf(path, sizeof path, "%s/index.html", dir);
    if (!pj) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    st = write_html(path, pj, f, meta);
    json_decref(pj);
    return st;
}

static lm_status stats_tensor(const lm_safetensors *st, const char *path, const char *name, size_t d_sae, float **out) {
    const lm_st_tensor *t = lm_safetensors_find(st, name);
    if (!t) return lm_fail(LM_ERR_FORMAT, "%s: no tensor '%s'", path, name);
    if (t->dtype != LM_ST_F32 || t->n_dims != 1 || t->shape[0] != d_sae)
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' is %s with %d dims (first %llu), expected F32 [%zu] (the SAE's d_sae)",
                       path, name, lm_st_dtype_name(t->dtype), t->n_dims,
                       (unsigned long long)(t->n_dims ? t->shape[0] : 0), d_sae);
    float *v = lm_malloc(d_sae, sizeof(float));
    if (!v) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    memcpy(v, t->data, d_sae * sizeof(float));
    for (size_t i = 0; i < d_sae; i++)
        if (!isfinite(v[i]) || v[i] < 0) {
            double bad = (double)v[i];
            free(v);
            return lm_fail(LM_ERR_FORMAT, "%s: '%s' of latent %zu is %g (must be finite and >= 0)", path, name, i, bad);
        }
    *out = v;
    return LM_OK;
}

lm_status lm_sae_feature_stats_load(const char *path, const lm_sae *sae, float **max_act, float **density) {
    if (max_act) *max_act = NULL;
    if (density) *density = NULL;
    lm_safetensors *st = NULL;
    lm_status s = lm_safetensors_open(path, &st);
    if (s != LM_OK) return s;
    const char *sum = lm_safetensors_meta(st, "sae_checksum");
    char want[32];
    snprintf(want, sizeof want, "%016" PRIx64, lm_sae_checksum(sae));
    if (sum && strcmp(sum, want) != 0)
        s = lm_fail(LM_ERR_ARG, "%s: statistics of another SAE (checksum %s, this SAE's is %s); run `lumen sae features` again",
                    path, sum, want);
    if (s == LM_OK && max_act) s = stats_tensor(st, path, "max_act", sae->d_sae, max_act);
    if (s == LM_OK && density) s = stats_tensor(st, path, "density", sae->d_sae, density);
    if (s != LM_OK) {
        if (max_act) {
            free(*max_act);
            *max_act = NULL;
        }
    }
    lm_safetensors_close(st);
    return s;
}
