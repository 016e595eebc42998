/* cmd_train.c - `lumen train`: train a model on token shards, resumable. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "lumen/train.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen train --data DIR -o OUT [options]\n\n"
            "Trains on the token shards in DIR (written by `lumen tokenize-data`) with AdamW, warmup +\n"
            "cosine learning rate, gradient clipping and accumulation. Checkpoints go to OUT/ckpt/\n"
            "(atomically); running the same command again resumes from the latest one and continues\n"
            "bit-identically. OUT/train_log.jsonl has one JSON object per step; the final model is\n"
            "written to OUT/ in the Hugging Face layout.\n\n"
            "model (when not --init):\n"
            "  --arch llama|gpt2   (default llama)\n"
            "  --dim N --layers N --heads N --kv-heads N --ffn N   (defaults 128, 4, 4, heads, 4*dim*2/3)\n"
            "  --init MODEL        continue from an existing model instead\n"
            "  --tokenizer FILE    saved beside the model as tokenizer.json\n"
            "optimisation:\n"
            "  --steps N (1000)  --batch N (8)  --ctx N (128)  --accum N (1)\n"
            "  --lr X (1e-3)  --min-lr X (1e-4)  --warmup N (50)  --wd X (0.1)\n"
            "  --beta1 X (0.9)  --beta2 X (0.95)  --clip X (1.0; 0 = off)\n"
            "  --eval-every N (100)  --eval-batches N (8)  --save-every N (100)\n"
            "  --seed N (1337)  --threads T  --quiet  --json\n");
}

int cmd_train(int argc, char **argv) {
    lm_train_opts o;
    lm_train_opts_default(&o);
    const char *arch = "llama";
    long dim = 128, layers = 4, heads = 4, kv = 0, ffn = 0, threads = 0, v;
    double x;
    int json = 0;
    unsigned long long seed;
    long steps = o.steps, batch = o.batch, ctx = o.ctx, accum = o.accum, warmup = o.warmup;
    long eval_every = o.eval_every, eval_batches = o.eval_batches, save_every = o.save_every;
    const struct {
        const char *name;
        long lo, hi;
        long *dst;
    } ints[] = {
        {"--dim", 8, 1 << 14, &dim},           {"--layers", 1, 512, &layers},
        {"--heads", 1, 512, &heads},           {"--kv-heads", 1, 512, &kv},
        {"--ffn", 1, 1 << 18, &ffn},           {"--steps", 1, 1L << 40, &steps},
        {"--batch", 1, 1 << 16, &batch},       {"--ctx", 2, 1 << 20, &ctx},
        {"--accum", 1, 1 << 16, &accum},       {"--warmup", 0, 1L << 40, &warmup},
        {"--eval-every", 0, 1L << 40, &eval_every}, {"--eval-batches", 0, 1 << 20, &eval_batches},
        {"--save-every", 0, 1L << 40, &save_every}, {"--threads", 1, 1024, &threads},
    };
    const struct {
        const char *name;
        double lo, hi;
        float *dst;
    } flts[] = {
        {"--lr", 1e-9, 10, &o.lr},           {"--min-lr", 0, 10, &o.min_lr},
        {"--wd", 0, 10, &o.weight_decay},    {"--beta1", 0, 0.9999999, &o.beta1},
        {"--beta2", 0, 0.9999999, &o.beta2}, {"--clip", 0, 1e9, &o.clip},
        {"--linearity-reg", 0, 1e6, &o.linearity_reg},
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int hv = i + 1 < argc;
        const char *val = hv ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return CLI_OK;
        }
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            o.progress = 0;
            continue;
        }
        if (!strcmp(a, "--data") && hv) { o.data_dir = argv[++i]; continue; }
        if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && hv) { o.out_dir = argv[++i]; continue; }
        if (!strcmp(a, "--init") && hv) { o.init_model = argv[++i]; continue; }
        if (!strcmp(a, "--tokenizer") && hv) { o.tokenizer = argv[++i]; continue; }
        if (!strcmp(a, "--arch") && hv) { arch = argv[++i]; continue; }
        if (!strcmp(a, "--seed") && hv) {
            if (cli_parse_u64("train", a, val, &seed)) return CLI_USAGE;
            o.seed = seed;
            i++;
            continue;
        }
        int matched = 0;
        for (size_t k = 0; k < sizeof ints / sizeof ints[0] && !matched; k++)
            if (!strcmp(a, ints[k].name) && hv) {
                if (cli_parse_int("train", a, val, ints[k].lo, ints[k].hi, &v)) return CLI_USAGE;
                *ints[k].dst = v;
                matched = 1;
            }
        for (size_t k = 0; k < sizeof flts / sizeof flts[0] && !matched; k++)
            if (!strcmp(a, flts[k].name) && hv) {
                if (cli_parse_float("train", a, val, flts[k].lo, flts[k].hi, &x)) return CLI_USAGE;
                *flts[k].dst = (float)x;
                matched = 1;
            }
        if (matched) {
            i++;
            continue;
        }
        return cli_usage_error("train", "unknown option or missing value: %s", a);
    }
    if (!o.data_dir || !o.out_dir) return cli_usage_error("train", "expected --data DIR and -o OUT");
    o.steps = steps;
    o.batch = (int)batch;
    o.ctx = (int)ctx;
    o.accum = (int)accum;
    o.warmup = warmup;
    o.eval_every = eval_every;
    o.eval_batches = (int)eval_batches;
    o.save_every = save_every;
    if (strcmp(arch, "llama") && strcmp(arch, "gpt2"))
        return cli_usage_error("train", "--arch must be llama or gpt2, got '%s'", arch);
    if (dim % heads) return cli_usage_error("train", "--dim %ld is not a multiple of --heads %ld", dim, heads);
    if (kv == 0) kv = heads;
    if (heads % kv) return cli_usage_error("train", "--heads %ld is not a multiple of --kv-heads %ld", heads, kv);
    lm_config *c = &o.cfg;
    c->arch = strcmp(arch, "gpt2") ? LM_ARCH_LLAMA : LM_ARCH_GPT2;
    c->dim = (int)dim;
    c->n_layers = (int)layers;
    c->n_heads = (int)heads;
    c->n_kv_heads = c->arch == LM_ARCH_GPT2 ? (int)heads : (int)kv;
    c->head_dim = (int)(dim / heads);
    c->hidden_dim = ffn ? (int)ffn : c->arch == LM_ARCH_GPT2 ? (int)(4 * dim) : (int)((8 * dim / 3 + 63) / 64 * 64);
    c->seq_len = o.ctx;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->tied_embeddings = 1;
    lm_set_threads((int)threads);
    lm_train_result r;
    lm_status st = lm_train_run(&o, &r);
    if (st != LM_OK) return cli_error(st);
    if (json) {
        json_t *j = json_object();
        json_object_set_new(j, "out", cli_json_text(o.out_dir, strlen(o.out_dir)));
        json_object_set_new(j, "steps", json_integer(r.steps_done));
        json_object_set_new(j, "resumed_from", json_integer(r.resumed_from));
        json_object_set_new(j, "final_loss", json_real(r.final_loss));
        json_object_set_new(j, "final_val_loss", json_real(r.final_val_loss));
        json_object_set_new(j, "tokens_per_s", json_real(r.tokens_per_s));
        json_object_set_new(j, "seconds", json_real(r.seconds));
        return cli_print_json(j);
    }
    printf("trained %ld steps%s: loss %.4f, val loss %.4f, %.0f tokens/s; model in %s\n", r.steps_done,
           r.resumed_from >= 0 ? " (resumed)" : "", r.final_loss, r.final_val_loss, r.tokens_per_s, o.out_dir);
    return CLI_OK;
}
