/* cmd_sae.c - `lumen sae`: sparse autoencoders over model activations (train, eval, features). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen sae <command> [options]\n\n"
            "commands:\n"
            "  train MODEL FILE --hook NAME --d-sae N -o DIR\n"
            "                   train a sparse autoencoder on activations made on the fly (resumable)\n"
            "  eval MODEL SAE FILE\n"
            "                   reconstruction, sparsity and downstream loss of an SAE spliced in\n"
            "  features MODEL SAE FILE [-o DIR]\n"
            "                   every latent's density, max activation, top and sampled contexts, logit\n"
            "                   effects and neighbours: features.json, an HTML browser, feature stats\n\n"
            "Run `lumen sae COMMAND --help` for the options of each.\n");
}

static void help_train(FILE *f) {
    fprintf(f,
            "usage: lumen sae train MODEL FILE --hook NAME --d-sae N -o DIR [options]\n"
            "       lumen sae train [MODEL] --acts ACTS --hook NAME --d-sae N -o DIR [options]\n\n"
            "Runs FILE through MODEL in windows of --ctx tokens, captures the activations at --hook\n"
            "(or reads them, in order and wrapping around, from ACTS: a directory written by\n"
            "`lumen activations` with --hook NAME among its hooks) through a shuffling buffer and\n"
            "trains an SAE on them (inputs scaled so E||x||^2 = d; Adam, gradient clipping, L1\n"
            "warm-up and a linear LR decay over the last 20%%). With --acts, MODEL is optional: when\n"
            "given it must have the hook and the shards' width, and it names the model in cfg.json\n"
            "(else the manifest's model is recorded); the windows are the shards' own.\n"
            "DIR gets sae_log.jsonl (mse, explained variance, L0, dead latents), checkpoints in\n"
            "DIR/ckpt (run the same command again to resume) and the final SAE in SAELens layout\n"
            "(cfg.json, sae_weights.safetensors, sparsity.safetensors), scale folded in.\n\n"
            "  --hook NAME        e.g. blocks.2.hook_resid_post (TransformerLens names)\n"
            "  --acts ACTS        train on the activation shards in ACTS instead of FILE\n"
            "  --d-sae N          number of latents\n"
            "  --arch A           relu (ReLU + L1), topk (TopK + AuxK) or jumprelu (JumpReLU + L0,\n"
            "                     Rajamanoharan et al. 2024) (default relu)\n"
            "  --k K              active latents per token for topk (default 32)\n"
            "  --l1 C             L1 coefficient for relu (default 5)\n"
            "  --l0 C             L0 coefficient for jumprelu (default 1)\n"
            "  --bandwidth E      jumprelu: width of the threshold's straight-through kernel\n"
            "                     (default 0.001; inputs are scaled to E||x||^2 = d)\n"
            "  --init-threshold T jumprelu: initial threshold (default 0.001); Adam moves log(threshold)\n"
            "                     by about --lr a step, so short runs need it near the pre-activations\n"
            "  --lr LR            learning rate (default 5e-5 relu, 2e-4 topk, 7e-5 jumprelu)\n"
            "  --tokens N         training tokens (default 1000000), or\n"
            "  --steps N          training steps\n"
            "  --batch N          SAE batch in tokens (default 4096)\n"
            "  --buffer-mult N    shuffling buffer = N batches (even, default 16)\n"
            "  --ctx N            window length (default: the model's context)\n"
            "  --fwd-batch N      windows per forward pass (default 8)\n"
            "  --max-tokens N     use at most N tokens of FILE\n"
            "  --dead-window N    tokens without firing that make a latent dead (default\n"
            "                     min(10M, the run))\n"
            "  --clip X           gradient norm clip (default 1; 0 = none)\n"
            "  --dec-norm X       initial norm of each decoder row, in scaled units (default 0.1)\n"
            "  --log-every N      log every N steps (default 10)\n"
            "  --save-every N     checkpoint every N steps (default: only at the end)\n"
            "  --seed N           (default 1)\n"
            "  --tokenizer FILE   tokenizer for formats that keep it apart\n"
            "  --threads T        threads (default: all cores)\n"
            "  --quiet            no progress line\n"
            "  --json             print a JSON summary\n");
}

static int cmd_sae_train(int argc, char **argv) {
    const char *V = "sae train";
    const char *model_path = NULL, *file = NULL, *tok_path = NULL, *out = NULL, *hook = NULL, *arch = "relu";
    const char *acts = NULL, *model_only = NULL; /* model_only: an option that needs FILE, given with --acts */
    long d_sae = 0, k = 32, ctx = 0, fwd = 8, batch = 4096, bmult = 16, threads = 0, max_tokens = 0;
    unsigned long long tokens = 1000000, steps = 0, dead_window = 0, log_every = 10, save_every = 0, seed = 1;
    double l1 = -1, l0c = -1, lr = 0, clip = 1, bw = 0, th0 = 0, dec_norm = 0;
    int json = 0, quiet = 0, rc = CLI_OK;
    for (int i = 1; i < argc && rc == CLI_OK; i++) {
        const char *a = argv[i];
        int hv = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help_train(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--hook") && hv) hook = argv[++i];
        else if (!strcmp(a, "--acts") && hv) acts = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && hv) out = argv[++i];
        else if (!strcmp(a, "--tokenizer") && hv) tok_path = argv[++i];
        else if (!strcmp(a, "--arch") && hv) arch = argv[++i];
        else if (!strcmp(a, "--d-sae") && hv) rc = cli_parse_int(V, a, argv[++i], 1, 1L << 24, &d_sae) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--k") && hv) rc = cli_parse_int(V, a, argv[++i], 1, 1L << 24, &k) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--ctx") && hv) {
            model_only = a;
            rc = cli_parse_int(V, a, argv[++i], 1, 1L << 24, &ctx) ? CLI_USAGE : rc;
        } else if (!strcmp(a, "--fwd-batch") && hv) {
            model_only = a;
            rc = cli_parse_int(V, a, argv[++i], 1, 4096, &fwd) ? CLI_USAGE : rc;
        }
        else if (!strcmp(a, "--batch") && hv) rc = cli_parse_int(V, a, argv[++i], 1, 1L << 24, &batch) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--buffer-mult") && hv) rc = cli_parse_int(V, a, argv[++i], 2, 1024, &bmult) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--threads") && hv) rc = cli_parse_int(V, a, argv[++i], 1, 1024, &threads) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--max-tokens") && hv) {
            model_only = a;
            rc = cli_parse_int(V, a, argv[++i], 1, 1L << 40, &max_tokens) ? CLI_USAGE : rc;
        }
        else if (!strcmp(a, "--tokens") && hv) rc = cli_parse_u64(V, a, argv[++i], &tokens) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--steps") && hv) rc = cli_parse_u64(V, a, argv[++i], &steps) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--dead-window") && hv) rc = cli_parse_u64(V, a, argv[++i], &dead_window) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--log-every") && hv) rc = cli_parse_u64(V, a, argv[++i], &log_every) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--save-every") && hv) rc = cli_parse_u64(V, a, argv[++i], &save_every) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--seed") && hv) rc = cli_parse_u64(V, a, argv[++i], &seed) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--l1") && hv) rc = cli_parse_float(V, a, argv[++i], 0, 1e6, &l1) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--l0") && hv) rc = cli_parse_float(V, a, argv[++i], 0, 1e6, &l0c) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--bandwidth") && hv) rc = cli_parse_float(V, a, argv[++i], 1e-9, 1e6, &bw) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--init-threshold") && hv) rc = cli_parse_float(V, a, argv[++i], 1e-9, 1e6, &th0) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--lr") && hv) rc = cli_parse_float(V, a, argv[++i], 1e-12, 10, &lr) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--clip") && hv) rc = cli_parse_float(V, a, argv[++i], 0, 1e12, &clip) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--dec-norm") && hv)
            rc = cli_parse_float(V, a, argv[++i], 1e-6, 1e6, &dec_norm) ? CLI_USAGE : rc;
        else if (a[0] == '-' && a[1]) rc = cli_usage_error(V, "unknown option or missing value: %s", a);
        else if (!model_path) model_path = a;
        else if (!file) file = a;
        else rc = cli_usage_error(V, "unexpected argument: %s", a);
    }
    lm_sae_arch ar = LM_SAE_RELU;
    if (rc == CLI_OK && !acts && (!model_path || !file)) rc = cli_usage_error(V, "expected MODEL and FILE (or --acts ACTS)");
    if (rc == CLI_OK && acts && file) rc = cli_usage_error(V, "give FILE or --acts, not both (unexpected argument: %s)", file);
    if (rc == CLI_OK && acts && model_only)
        rc = cli_usage_error(V, "%s does not apply with --acts (the shards were cut when harvested)", model_only);
    if (rc == CLI_OK && !hook) rc = cli_usage_error(V, "missing --hook NAME");
    if (rc == CLI_OK && !d_sae) rc = cli_usage_error(V, "missing --d-sae N");
    if (rc == CLI_OK && !out) rc = cli_usage_error(V, "missing -o DIR");
    if (rc == CLI_OK) {
        if (!strcmp(arch, "relu") || !strcmp(arch, "standard")) ar = LM_SAE_RELU;
        else if (!strcmp(arch, "topk")) ar = LM_SAE_TOPK;
        else if (!strcmp(arch, "jumprelu")) ar = LM_SAE_JUMPRELU;
        else rc = cli_usage_error(V, "--arch must be relu, topk or jumprelu, got '%s'", arch);
    }
    if (rc == CLI_OK && ar != LM_SAE_JUMPRELU && (l0c >= 0 || bw > 0 || th0 > 0))
        rc = cli_usage_error(V, "--l0, --bandwidth and --init-threshold are for --arch jumprelu");
    if (rc == CLI_OK) {
    }
    if (rc == CLI_OK && bmult % 2) rc = cli_usage_error(V, "--buffer-mult must be even");
    if (rc != CLI_OK) return rc;
    lm_set_threads((int)threads);
    lm_model *m = NULL;
    lm_status st = model_path ? lm_model_load(model_path, &m) : LM_OK;
    lm_tokenizer *owned = NULL;
    const lm_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    /* with --acts the tokenizer only tells whether the harvest put BOS first (lumen's harvest
     * does when the tokenizer has one; without one that is assumed) */
    if (st == LM_OK && (tok_path || (model_path && (!acts || m->tokenizer))))
        st = cli_load_tokenizer(model_path, tok_path, m, &owned, &tok);
    if (st == LM_OK && !acts) st = lm_tokenize_file(tok, file, 1, (size_t)max_tokens, &ids, &n);
    lm_sae_train_result r;
    if (st == LM_OK) {
        lm_sae_train_opts o;
        memset(&o, 0, sizeof o);
        o.model = m;
        o.ids = ids;
        o.n_ids = n;
        o.hook = hook;
        o.model_name = model_path;
        o.source_name = acts ? acts : file;
        o.prepend_bos = tok ? lm_tokenizer_wants_bos(tok) : 1;
        o.acts_dir = acts;
        o.out_dir = out;
        o.arch = ar;
        o.d_sae = (size_t)d_sae;
        o.k = (size_t)k;
        o.l1_coeff = (float)(ar == LM_SAE_JUMPRELU ? (l0c > 0 ? l0c : 0) : (l1 > 0 ? l1 : 0));
        o.bandwidth = (float)bw;
        o.init_threshold = (float)th0;
        o.lr = (float)lr;
        o.clip = clip > 0 ? (float)clip : -1.0f;
        o.dec_norm = (float)dec_norm;
        o.ctx = (int)ctx;
        o.fwd_batch = (int)fwd;
        o.batch = (size_t)batch;
        o.buffer_mult = (size_t)bmult;
        o.steps = steps;
        o.tokens = tokens;
        o.dead_window = dead_window;
        o.log_every = log_every;
        o.save_every = save_every;
        o.seed = seed;
        o.progress = !quiet;
        st = lm_sae_train(&o, &r);
    }
    if (st != LM_OK) rc = cli_error(st);
    else if (json) {
        json_t *j = json_object();
        json_object_set_new(j, "out", cli_json_text(out, strlen(out)));
        json_object_set_new(j, "steps", json_integer((json_int_t)r.steps_done));
        json_object_set_new(j, "tokens", json_integer((json_int_t)r.tokens_done));
        json_object_set_new(j, "resumed_from", json_integer((json_int_t)r.resumed_from));
        json_object_set_new(j, "already_done", json_boolean(r.already_done));
        json_object_set_new(j, "scale", json_real(r.scale));
        if (!r.already_done) {
            json_object_set_new(j, "mse", json_real(r.mse));
            json_object_set_new(j, "explained_variance", json_real(r.ev));
            json_object_set_new(j, "l0", json_real(r.l0));
        }
        json_object_set_new(j, "dead", json_integer((json_int_t)r.n_dead));
        json_object_set_new(j, "tokens_per_s", json_real(r.tokens_per_s));
        rc = cli_print_json(j);
    } else if (r.already_done) {
        printf("%s: already trained (%llu steps); nothing to do\n", out, (unsigned long long)r.steps_done);
    } else {
        printf("trained %llu steps (%llu tokens, %.0f tok/s): mse %.4g, explained variance %.4f, L0 %.2f, %zu dead; "
               "saved to %s\n",
               (unsigned long long)r.steps_done, (unsigned long long)r.tokens_done, r.tokens_per_s, r.mse, r.ev, r.l0,
               r.n_dead, out);
    }
    free(ids);
    lm_tokenizer_free(owned);
    lm_model_free(m);
    return rc;
}

static void help_eval(FILE *f) {
    fprintf(f,
            "usage: lumen sae eval MODEL SAE FILE [options]\n\n"
            "Runs FILE through MODEL in consecutive windows of --ctx tokens (as `lumen eval`) three\n"
            "ways: clean; with the activation at the SAE's hook replaced by its reconstruction\n"
            "(encode + decode of the raw activation); and with that activation zeroed (ablated).\n"
            "Over the N tokens run (d = the SAE's d_in):\n"
            "  mse                sum_t ||x_t - x_hat_t||^2 / (N d)   (mean squared error per element)\n"
            "  fvu                sum_t ||x_t - x_hat_t||^2 / sum_t ||x_t - mean||^2, the mean taken\n"
            "                     over the N tokens (fraction of variance unexplained)\n"
            "  l0                 mean number of nonzero latents per token\n"
            "  dead_fraction      fraction of latents never nonzero on the N tokens\n"
            "  dense_fraction     fraction of latents nonzero on more than 10%% of the tokens\n"
            "  ce_clean, ce_sae, ce_ablated\n"
            "                     mean next-token cross-entropy (nats) over the predicted positions\n"
            "  ce_loss_recovered  (ce_ablated - ce_sae) / (ce_ablated - ce_clean) (null if 0/0)\n"
            "  kl                 mean over predicted positions of KL(clean || sae) of the next-token\n"
            "                     distributions (nats)\n\n"
            "  --hook NAME        hook to splice at (default: the SAE's hook_name from cfg.json)\n"
            "  --ctx N            window length (default: the SAE's context_size if it fits, else\n"
            "                     the model's context)\n"
            "  --batch N          windows per forward pass (default 1)\n"
            "  --max-tokens N     use at most N tokens of FILE\n"
            "  --tokenizer FILE   tokenizer for formats that keep it apart\n"
            "  --threads T        threads (default: all cores)\n"
            "  --json             print the results as JSON\n");
}

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static int cmd_sae_eval(int argc, char **argv) {
    const char *V = "sae eval";
    const char *model_path = NULL, *sae_path = NULL, *file = NULL, *tok_path = NULL, *hook = NULL;
    long ctx = 0, batch = 1, threads = 0, max_tokens = 0;
    int json = 0, rc = CLI_OK;
    for (int i = 1; i < argc && rc == CLI_OK; i++) {
        const char *a = argv[i];
        int hv = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help_eval(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--hook") && hv) hook = argv[++i];
        else if (!strcmp(a, "--tokenizer") && hv) tok_path = argv[++i];
        else if (!strcmp(a, "--ctx") && hv) rc = cli_parse_int(V, a, argv[++i], 2, 1L << 24, &ctx) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--batch") && hv) rc = cli_parse_int(V, a, argv[++i], 1, 4096, &batch) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--threads") && hv) rc = cli_parse_int(V, a, argv[++i], 1, 1024, &threads) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--max-tokens") && hv) rc = cli_parse_int(V, a, argv[++i], 1, 1L << 40, &max_tokens) ? CLI_USAGE : rc;
        else if (a[0] == '-' && a[1]) rc = cli_usage_error(V, "unknown option or missing value: %s", a);
        else if (!model_path) model_path = a;
        else if (!sae_path) sae_path = a;
        else if (!file) file = a;
        else rc = cli_usage_error(V, "unexpected argument: %s", a);
    }
    if (rc == CLI_OK && (!model_path || !sae_path || !file)) rc = cli_usage_error(V, "expected MODEL, SAE and FILE");
    if (rc != CLI_OK) return rc;
    lm_set_threads((int)threads);
    lm_model *m = NULL;
    lm_sae *sae = NULL;
    lm_tokenizer *owned = NULL;
    const lm_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    lm_status st = lm_model_load(model_path, &m);
    if (st == LM_OK) st = lm_sae_load(sae_path, &sae);
    if (st == LM_OK && !hook && !sae->hook_name) st = lm_fail(LM_ERR_ARG, "%s: the SAE names no hook; give --hook", sae_path);
    if (st == LM_OK) st = cli_load_tokenizer(model_path, tok_path, m, &owned, &tok);
    if (st == LM_OK) st = lm_tokenize_file(tok, file, 1, (size_t)max_tokens, &ids, &n);
    lm_sae_eval_result r;
    if (st == LM_OK) {
        lm_sae_eval_opts o;
        memset(&o, 0, sizeof o);
        o.hook = hook;
        o.ctx = (int)ctx;
        if (!ctx && sae->context_size > 1 && sae->context_size <= m->cfg.seq_len) o.ctx = (int)sae->context_size;
        o.batch = (int)batch;
        st = lm_sae_eval(m, sae, ids, n, &o, &r);
    }
    if (st != LM_OK) rc = cli_error(st);
    else if (json) {
        json_t *j = json_object();
        const char *h = hook ? hook : sae->hook_name;
        json_object_set_new(j, "hook", cli_json_text(h, strlen(h)));
        json_object_set_new(j, "tokens", json_integer((json_int_t)r.n_tokens));
        json_object_set_new(j, "predicted", json_integer((json_int_t)r.n_predicted));
        json_object_set_new(j, "mse", jnum(r.mse));
        json_object_set_new(j, "fvu", jnum(r.fvu));
        json_object_set_new(j, "l0", jnum(r.l0));
        json_object_set_new(j, "dead_fraction", jnum(r.dead_fraction));
        json_object_set_new(j, "dense_fraction", jnum(r.dense_fraction));
        json_object_set_new(j, "ce_clean", jnum(r.ce_clean));
        json_object_set_new(j, "ce_sae", jnum(r.ce_sae));
        json_object_set_new(j, "ce_ablated", jnum(r.ce_ablated));
        json_object_set_new(j, "ce_loss_recovered", jnum(r.ce_loss_recovered));
        json_object_set_new(j, "kl", jnum(r.kl));
        json_object_set_new(j, "seconds", jnum(r.seconds));
        rc = cli_print_json(j);
    } else {
        printf("%zu tokens, %zu predicted, hook %s\n", r.n_tokens, r.n_predicted, hook ? hook : sae->hook_name);
        printf("mse %.6g  fvu %.6g  L0 %.2f  dead %.4f  dense %.4f\n", r.mse, r.fvu, r.l0, r.dead_fraction,
               r.dense_fraction);
        printf("ce clean %.6f  sae %.6f  ablated %.6f  recovered %.4f  kl %.6g\n", r.ce_clean, r.ce_sae,
               r.ce_ablated, r.ce_loss_recovered, r.kl);
    }
    free(ids);
    lm_tokenizer_free(owned);
    lm_sae_free(sae);
    lm_model_free(m);
    return rc;
}

static void help_features(FILE *f) {
    fprintf(f,
            "usage: lumen sae features MODEL SAE FILE [-o DIR] [options]\n\n"
            "Runs FILE through MODEL in consecutive windows of --ctx tokens (as `lumen activations` and\n"
            "`lumen sae eval`), encodes the activation at the SAE's hook and, for every latent, records:\n"
            "  density            fraction of the tokens where it is nonzero\n"
            "  max_act, mean_act  largest activation; mean over the tokens where it fires\n"
            "  top contexts       the --top largest activations, each with up to 16 tokens before and 4\n"
            "                     after (inside its window) and the latent's activation at each token\n"
            "  interval samples   a second pass cuts (0, max_act] into --intervals equal intervals and\n"
            "                     draws --samples tokens from each (seeded reservoir sampling)\n"
            "  logit effects      the 10 tokens W_dec[i] promotes and the 10 it suppresses most through\n"
            "                     the output head, with the final norm's weight applied (its scale and\n"
            "                     bias do not depend on the latent and are left out)\n"
            "  neighbours         the 10 latents whose decoder rows have the largest cosine similarity\n"
            "A latent that never fires (dead) gets density 0 and no contexts.\n\n"
            "DIR (default SAE/features, where `lumen steer` looks) gets, each written atomically:\n"
            "  features.json              everything above, per latent (schema in README.md and sae.h)\n"
            "  index.html                 a self-contained feature browser: open it in a browser\n"
            "  feature_stats.safetensors  density and max_act [d_sae] (F32), for `lumen steer`\n\n"
            "  -o, --out DIR       output directory (default SAE/features)\n"
            "  --tokens N          use at most the first N tokens of FILE (default 16384)\n"
            "  --ctx N             window length (default: the SAE's context_size if it fits, else the\n"
            "                      model's context)\n"
            "  --hook NAME         hook (default: the SAE's hook_name from cfg.json)\n"
            "  --batch N           windows per forward pass (default 8)\n"
            "  --top N             top contexts per latent (default 20)\n"
            "  --intervals N       activation intervals sampled (default 5)\n"
            "  --samples N         contexts drawn from each interval (default 3)\n"
            "  --seed N            of the interval samples (default 1)\n"
            "  --show ID[,ID...]   print these latents' cards as text\n"
            "  --tokenizer FILE    tokenizer for formats that keep it apart\n"
            "  --threads T         threads (default: all cores)\n"
            "  --quiet             no progress line\n"
            "  --json              print a JSON summary (out, hook, tokens, windows, d_sae, dead, seconds)\n");
}

/* A token as one line of text: newlines and tabs made visible. */
static void print_tok(const lm_tokenizer *tok, int prev, int id) {
    char *s = lm_sae_token_display(tok, prev, id);
    for (const char *p = s ? s : "?"; *p; p++) {
        if (*p == '\n') fputs("\\n", stdout);
        else if (*p == '\t') fputs("\\t", stdout);
        else if (*p == '\r') fputs("\\r", stdout);
        else putchar(*p);
    }
    free(s);
}

static void print_card(const lm_sae_features *F, const lm_tokenizer *tok, size_t i) {
    printf("feature %zu: density %.4g (%llu of %zu tokens), max activation %.4g, mean %.4g\n", i,
           (double)F->density[i], (unsigned long long)F->n_fired[i], F->n_tokens, (double)F->max_act[i],
           (double)F->mean_act[i]);
    const char *lab[2] = {"  promotes:   ", "  suppresses: "};
    for (int w = 0; w < 2; w++) {
        fputs(lab[w], stdout);
        for (size_t k = 0; k < F->n_logits && k < 8; k++) {
            int id = (w ? F->logit_bottom_id : F->logit_top_id)[i * F->n_logits + k];
            putchar('\'');
            print_tok(tok, id == 0 ? 1 : 0, id);
            fputs("' ", stdout);
        }
        putchar('\n');
    }
    fputs("  neighbours: ", stdout);
    for (size_t k = 0; k < F->n_neighbours && k < 8; k++)
        printf("%d (%.2f) ", F->neighbour_id[i * F->n_neighbours + k], (double)F->neighbour_cos[i * F->n_neighbours + k]);
    putchar('\n');
    if (!F->top_count[i]) {
        printf("  dead on this text: no contexts\n");
        return;
    }
    for (uint32_t k = 0; k < F->top_count[i] && k < 5; k++) {
        const lm_sae_context *c = &F->top[i * F->n_top + k];
        printf("  %7.3f  ", (double)c->act);
        for (uint32_t t = 0; t < c->len; t++) {
            if (t == c->at) fputs("[[", stdout);
            print_tok(tok, t ? c->tokens[t - 1] : c->prev, c->tokens[t]);
            if (t == c->at) fputs("]]", stdout);
        }
        putchar('\n');
    }
}

static int cmd_sae_features(int argc, char **argv) {
    const char *V = "sae features";
    const char *model_path = NULL, *sae_path = NULL, *file = NULL, *tok_path = NULL, *hook = NULL, *out = NULL,
               *show = NULL;
    long ctx = 0, batch = 8, threads = 0, max_tokens = 16384, n_top = 20, n_iv = 5, n_samp = 3;
    unsigned long long seed = 1;
    int json = 0, quiet = 0, rc = CLI_OK;
    for (int i = 1; i < argc && rc == CLI_OK; i++) {
        const char *a = argv[i];
        int hv = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help_features(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--hook") && hv) hook = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && hv) out = argv[++i];
        else if (!strcmp(a, "--tokenizer") && hv) tok_path = argv[++i];
        else if (!strcmp(a, "--show") && hv) show = argv[++i];
        else if (!strcmp(a, "--ctx") && hv) rc = cli_parse_int(V, a, argv[++i], 2, 1L << 24, &ctx) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--batch") && hv) rc = cli_parse_int(V, a, argv[++i], 1, 4096, &batch) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--top") && hv) rc = cli_parse_int(V, a, argv[++i], 1, 1000, &n_top) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--intervals") && hv) rc = cli_parse_int(V, a, argv[++i], 1, 100, &n_iv) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--samples") && hv) rc = cli_parse_int(V, a, argv[++i], 1, 1000, &n_samp) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--threads") && hv) rc = cli_parse_int(V, a, argv[++i], 1, 1024, &threads) ? CLI_USAGE : rc;
        else if ((!strcmp(a, "--tokens") || !strcmp(a, "--max-tokens")) && hv)
            rc = cli_parse_int(V, a, argv[++i], 1, 1L << 40, &max_tokens) ? CLI_USAGE : rc;
        else if (!strcmp(a, "--seed") && hv) rc = cli_parse_u64(V, a, argv[++i], &seed) ? CLI_USAGE : rc;
        else if (a[0] == '-' && a[1]) rc = cli_usage_error(V, "unknown option or missing value: %s", a);
        else if (!model_path) model_path = a;
        else if (!sae_path) sae_path = a;
        else if (!file) file = a;
        else rc = cli_usage_error(V, "unexpected argument: %s", a);
    }
    if (rc == CLI_OK && (!model_path || !sae_path || !file)) rc = cli_usage_error(V, "expected MODEL, SAE and FILE");
    /* --show: a comma-separated list of ids */
    size_t n_show = 0;
    long *show_ids = NULL;
    if (rc == CLI_OK && show) {
        show_ids = calloc(strlen(show) + 1, sizeof(long));
        const char *p = show;
        while (show_ids && rc == CLI_OK && *p) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || v < 0 || (*end && *end != ',')) rc = cli_usage_error(V, "--show expects ids like 3,17,40, got '%s'", show);
            else show_ids[n_show++] = v;
            p = *end ? end + 1 : end;
        }
    }
    if (rc != CLI_OK) {
        free(show_ids);
        return rc;
    }
    lm_set_threads((int)threads);
    lm_model *m = NULL;
    lm_sae *sae = NULL;
    lm_tokenizer *owned = NULL;
    const lm_tokenizer *tok = NULL;
    lm_sae_features *F = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    char outbuf[4096];
    lm_status st = lm_model_load(model_path, &m);
    if (st == LM_OK) st = lm_sae_load(sae_path, &sae);
    if (st == LM_OK && !hook) hook = sae->hook_name;
    if (st == LM_OK && !hook) st = lm_fail(LM_ERR_ARG, "%s/cfg.json: the SAE names no hook; give --hook", sae_path);
    lm_hook_point pt;
    int layer;
    if (st == LM_OK && lm_hook_parse(m, hook, &pt, &layer) != LM_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", lm_errmsg()); /* lm_fail formats into the same buffer */
        st = lm_fail(LM_ERR_ARG, "%s: %s", model_path, msg);
    }
    if (st == LM_OK && sae->d_in != (size_t)m->cfg.dim)
        st = lm_fail(LM_ERR_ARG, "%s: the SAE's d_in is %zu but hook %s of %s has width %d", sae_path, sae->d_in, hook,
                     model_path, m->cfg.dim);
    for (size_t k = 0; st == LM_OK && k < n_show; k++)
        if ((size_t)show_ids[k] >= sae->d_sae)
            st = lm_fail(LM_ERR_ARG, "--show %ld: out of range, %s has %zu latents", show_ids[k], sae_path, sae->d_sae);
    if (st == LM_OK) st = cli_load_tokenizer(model_path, tok_path, m, &owned, &tok);
    if (st == LM_OK) st = lm_tokenize_file(tok, file, 1, (size_t)max_tokens, &ids, &n);
    if (st == LM_OK && n == 0) st = lm_fail(LM_ERR_ARG, "%s: no text (0 tokens)", file);
    if (st == LM_OK && !out) {
        snprintf(outbuf, sizeof outbuf, "%s/features", sae_path);
        out = outbuf;
    }
    if (st == LM_OK) {
        lm_sae_features_opts o;
        memset(&o, 0, sizeof o);
        o.hook = hook;
        o.ctx = (int)ctx;
        if (!ctx && sae->context_size > 1 && sae->context_size <= m->cfg.seq_len) o.ctx = (int)sae->context_size;
        o.batch = (int)batch;
        o.n_top = (size_t)n_top;
        o.n_intervals = (size_t)n_iv;
        o.n_per_interval = (size_t)n_samp;
        o.before = 16;
        o.after = 4;
        o.seed = seed;
        lm_progress p;
        lm_progress_begin(&p, "sae features", "tok", (double)(2 * n), !quiet);
        o.progress = cli_progress_cb;
        o.progress_ud = &p;
        st = lm_sae_features_compute(m, sae, ids, n, &o, &F);
        lm_progress_end(&p);
    }
    if (st == LM_OK) {
        lm_sae_features_meta meta = {model_path, sae_path, file};
        st = lm_sae_features_write(F, sae, tok, &meta, out);
    }
    if (st != LM_OK) rc = cli_error(st);
    else {
        size_t dead = 0;
        for (size_t i = 0; i < F->d_sae; i++) dead += F->n_fired[i] == 0;
        if (json) {
            json_t *j = json_object();
            json_object_set_new(j, "out", cli_json_text(out, strlen(out)));
            json_object_set_new(j, "hook", cli_json_text(F->hook, strlen(F->hook)));
            json_object_set_new(j, "tokens", json_integer((json_int_t)F->n_tokens));
            json_object_set_new(j, "windows", json_integer((json_int_t)F->n_windows));
            json_object_set_new(j, "d_sae", json_integer((json_int_t)F->d_sae));
            json_object_set_new(j, "dead", json_integer((json_int_t)dead));
            json_object_set_new(j, "seconds", json_real(F->seconds));
            rc = cli_print_json(j);
        } else {
            for (size_t k = 0; k < n_show; k++) {
                print_card(F, tok, (size_t)show_ids[k]);
                putchar('\n');
            }
            printf("%zu latents (%zu dead on this text) over %zu tokens in %.1f s; wrote %s/features.json, "
                   "%s/feature_stats.safetensors\nbrowser: %s/index.html\n",
                   F->d_sae, dead, F->n_tokens, F->seconds, out, out, out);
        }
    }
    free(show_ids);
    free(ids);
    lm_sae_features_free(F);
    lm_tokenizer_free(owned);
    lm_sae_free(sae);
    lm_model_free(m);
    return rc;
}

int cmd_sae(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        help(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    if (!strcmp(argv[1], "train")) return cmd_sae_train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "eval")) return cmd_sae_eval(argc - 1, argv + 1);
    if (!strcmp(argv[1], "features")) return cmd_sae_features(argc - 1, argv + 1);
    fprintf(stderr, "lumen sae: unknown command '%s'\n\n", argv[1]);
    help(stderr);
    return CLI_USAGE;
}
