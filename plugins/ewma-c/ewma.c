/*
 * ewma: a native Twinloom plugin written in C against plugin-api/include/twinloom_plugin.h.
 *
 * Owned property i is the exponentially weighted moving average of input i:
 *   ewma = alpha * value + (1 - alpha) * ewma   (the first good value starts it)
 * with the input's quality (a bad input gives a bad output that keeps its last value). On every
 * tick, when the plugin has a writable property, it proposes writing input 0's average to it.
 *
 * Settings (the `config` table): `alpha`, in (0, 1], default 0.5.
 *
 * Build:  cc -std=c11 -O2 -shared -fPIC -I plugin-api/include -o ewma.so plugins/ewma-c/ewma.c
 * Config: [[plugins]] name = "ewma" kind = "native" file = "ewma.so" config = { alpha = 0.2 }
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "twinloom_plugin.h"

typedef struct ewma_instance {
  const twinloom_host *host;
  double alpha;
  size_t inputs;     /* number of inputs */
  size_t owned;      /* number of owned properties */
  int writable;      /* whether writable 0 exists and is a float */
  double *average;   /* per input */
  uint8_t *started;  /* per input: 1 once a good value arrived */
  /* The outputs of the last call (reused). */
  uint32_t *out_indices;
  double *out_values;
  uint8_t *out_qualities;
  twinloom_write_proposal proposal;
} ewma_instance;

static void say(const twinloom_host *host, uint32_t level, const char *text) {
  twinloom_str message = {(const uint8_t *)text, strlen(text)};
  host->log(host->context, level, message);
}

/* `alpha = <number>` in the TOML text, if present. Returns 0 when absent, 1 when read, -1 when
 * malformed. */
static int read_alpha(twinloom_str config, double *alpha) {
  char text[1024];
  size_t n = config.len < sizeof text - 1 ? config.len : sizeof text - 1;
  memcpy(text, config.ptr, n);
  text[n] = '\0';
  const char *key = strstr(text, "alpha");
  if (key == NULL) return 0;
  const char *equals = strchr(key, '=');
  if (equals == NULL) return -1;
  char *end = NULL;
  *alpha = strtod(equals + 1, &end);
  return end == equals + 1 ? -1 : 1;
}

static int32_t refuse(const char *why, uint8_t *error, size_t error_cap, size_t *error_len) {
  size_t n = strlen(why) < error_cap ? strlen(why) : error_cap;
  memcpy(error, why, n);
  *error_len = n;
  return TWINLOOM_REFUSED;
}

static void ewma_drop(void *instance);

static int32_t ewma_init(const twinloom_host *host, twinloom_str config,
                         const twinloom_properties *properties, void **instance, uint8_t *error,
                         size_t error_cap, size_t *error_len) {
  double alpha = 0.5;
  int read = read_alpha(config, &alpha);
  if (read < 0 || !(alpha > 0.0 && alpha <= 1.0)) {
    return refuse("alpha must be a number in (0, 1]", error, error_cap, error_len);
  }
  ewma_instance *self = calloc(1, sizeof *self);
  if (self == NULL) return TWINLOOM_FAULT;
  self->host = host;
  self->alpha = alpha;
  self->inputs = properties->inputs_len;
  self->owned = properties->owned_len;
  self->writable =
      properties->writable_len > 0 && properties->writable[0].data_type == TWINLOOM_FLOAT;
  size_t n = self->inputs > 0 ? self->inputs : 1;
  self->average = calloc(n, sizeof(double));
  self->started = calloc(n, 1);
  self->out_indices = calloc(n, sizeof(uint32_t));
  self->out_values = calloc(n, sizeof(double));
  self->out_qualities = calloc(n, 1);
  if (!self->average || !self->started || !self->out_indices || !self->out_values ||
      !self->out_qualities) {
    ewma_drop(self);
    return TWINLOOM_FAULT;
  }
  char line[128];
  snprintf(line, sizeof line, "ewma: alpha %g over %zu inputs", alpha, self->inputs);
  say(host, TWINLOOM_INFO, line);
  *instance = self;
  return TWINLOOM_OK;
}

static void empty(twinloom_outputs *outputs) { memset(outputs, 0, sizeof *outputs); }

static int32_t ewma_on_changes(void *instance, int64_t now_ms, const twinloom_change_batch *batch,
                               const twinloom_proposal_outcome *outcomes, size_t outcomes_len,
                               twinloom_outputs *outputs) {
  (void)now_ms;
  (void)outcomes;
  (void)outcomes_len;
  ewma_instance *self = instance;
  empty(outputs);
  size_t count = 0;
  for (size_t i = 0; i < batch->len; i++) {
    uint32_t input = batch->properties[i];
    if (input >= self->inputs || input >= self->owned) continue;
    uint8_t quality = batch->qualities[i];
    double value = batch->values[i];
    if (quality >= TWINLOOM_BAD || !isfinite(value)) {
      quality = TWINLOOM_BAD;
      value = NAN;
    } else if (!self->started[input]) {
      self->average[input] = value;
      self->started[input] = 1;
      value = self->average[input];
    } else {
      self->average[input] = self->alpha * value + (1.0 - self->alpha) * self->average[input];
      value = self->average[input];
    }
    /* One output per owned property per call: the last change wins. */
    size_t slot = count;
    for (size_t j = 0; j < count; j++) {
      if (self->out_indices[j] == input) slot = j;
    }
    if (slot == count) count++;
    self->out_indices[slot] = input;
    self->out_values[slot] = value;
    self->out_qualities[slot] = quality;
  }
  outputs->indices = self->out_indices;
  outputs->values = self->out_values;
  outputs->qualities = self->out_qualities;
  outputs->values_len = count;
  return TWINLOOM_OK;
}

static const char REASON[] = "follow the average of input 0";

static int32_t ewma_on_tick(void *instance, int64_t now_ms,
                            const twinloom_proposal_outcome *outcomes, size_t outcomes_len,
                            twinloom_outputs *outputs) {
  (void)now_ms;
  (void)outcomes;
  (void)outcomes_len;
  ewma_instance *self = instance;
  empty(outputs);
  if (self->writable && self->inputs > 0 && self->started[0]) {
    self->proposal = (twinloom_write_proposal){
        .value = {.kind = TWINLOOM_FLOAT, .real = self->average[0]},
        .index = 0,
        .reason_start = 0,
        .reason_len = (uint32_t)(sizeof REASON - 1),
    };
    outputs->proposals = &self->proposal;
    outputs->proposals_len = 1;
    outputs->reasons = (const uint8_t *)REASON;
    outputs->reasons_len = sizeof REASON - 1;
  }
  return TWINLOOM_OK;
}

/* The outputs point into the instance's buffers, reused by the next call: nothing to free. */
static void ewma_free_outputs(void *instance, twinloom_outputs *outputs) {
  (void)instance;
  empty(outputs);
}

static void ewma_drop(void *instance) {
  ewma_instance *self = instance;
  free(self->average);
  free(self->started);
  free(self->out_indices);
  free(self->out_values);
  free(self->out_qualities);
  free(self);
}

static const twinloom_plugin TABLE = {
    .abi_version = TWINLOOM_PLUGIN_ABI_VERSION,
    .size = sizeof(twinloom_plugin),
    .panic_strategy = TWINLOOM_PANIC_NONE,
    .init = ewma_init,
    .on_changes = ewma_on_changes,
    .on_tick = ewma_on_tick,
    .free_outputs = ewma_free_outputs,
    .drop = ewma_drop,
};

const twinloom_plugin *twinloom_plugin_entry(void) { return &TABLE; }
