/*
 * twinloom_plugin.h: the C ABI of Twinloom's native plugins, contract twinloom:plugin@0.3.0.
 *
 * A native plugin is a shared library (`.so`) the daemon loads with dlopen when a `[[plugins]]`
 * entry says `kind = "native"`. It runs inside the daemon's process, UNSANDBOXED: it can read and
 * write any memory of the daemon, call any system function and crash the daemon. Load only code
 * you trust as much as the daemon itself; everything else belongs in a WebAssembly component
 * (`kind = "wasm"`, the default), which the daemon sandboxes.
 *
 * The functions mirror the WebAssembly contract (plugin-api/wit/plugin.wit), which documents what
 * each value means: `init` with the plugin's settings and its input, owned and writable
 * properties; `on_changes` with a columnar batch of changes; `on_tick`; both with the outcomes of
 * earlier proposals and returning derived values (by index into the owned list) and write
 * proposals (by index into the writable list). The Rust mirror of this header is the crate
 * `twinloom-plugin-abi` (plugin-api/abi); a test compares the two layouts field by field.
 *
 * ENTRY POINT. The library exports one function, `twinloom_plugin_entry`, returning a pointer to
 * a `twinloom_plugin` table that stays valid while the process runs (a static). The table starts
 * with the ABI version and its own size, so later versions can grow it by appending fields: the
 * daemon refuses a library whose `abi_version` is not TWINLOOM_PLUGIN_ABI_VERSION (naming both
 * versions), or whose `size` is smaller than the table it needs, or that lacks a function.
 *
 * LIFETIMES. Every pointer the host passes in (strings, lists, the batch, the outcomes) is valid
 * only until the call returns: copy what you keep. The `twinloom_host` table is valid from `init`
 * until `drop` returns. The pointers a plugin returns in `twinloom_outputs` must stay valid until
 * the host calls `free_outputs` with them, which it does before it makes the next call on that
 * instance. Strings are UTF-8 with a byte length, never NUL-terminated.
 *
 * THREADS. Each instance runs on a thread of its own: `init`, every `on_changes` / `on_tick`,
 * `free_outputs` and `drop` of one instance are made on that one thread and never overlap.
 * Different instances of the same library run on different threads at the same time, so state
 * shared between instances (globals) needs locking. `log` may be called only during a call, on
 * the thread making it.
 *
 * DEADLINES. A native call cannot be interrupted. When a call runs past the plugin's `deadline`,
 * the daemon marks its outputs bad, abandons the thread (it is never joined; if the call ever
 * returns, the thread frees the outputs, drops the instance and ends) and quarantines the plugin.
 *
 * NOTHING UNWINDS ACROSS THE BOUNDARY. A C++ exception or a Rust panic that leaves one of these
 * functions is undefined behaviour (in practice the daemon aborts). Catch everything and return
 * TWINLOOM_FAULT instead: the daemon then treats it as the plugin's fault (outputs bad, instance
 * dropped, restarted with backoff, quarantined after `quarantine_after` faults in a row). The Rust
 * SDK (twinloom-plugin's `export_plugin!`) does this with catch_unwind, and reports a Rust
 * library built with `panic = "abort"` in `panic_strategy`, which the daemon refuses.
 *
 * LOADING. dlopen returns the library already loaded for a known path, and Twinloom never unloads
 * a library (its code may still run on an abandoned thread). So the daemon copies each plugin
 * file to `<state_dir>/native/<sha256 of the file>.so` and loads that copy: a changed file is a
 * new library, loaded beside the old one; the old version's code stays mapped until the daemon
 * exits.
 */
#ifndef TWINLOOM_PLUGIN_H
#define TWINLOOM_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version: the contract's (major << 16) | (minor << 8) | patch, here 0.3.0. */
#define TWINLOOM_PLUGIN_ABI_VERSION 0x000300u
/* The name of the entry point the library exports. */
#define TWINLOOM_PLUGIN_ENTRY "twinloom_plugin_entry"

/* Return codes of init, on_changes and on_tick. */
#define TWINLOOM_OK 0
/* init only: the settings are wrong; the message is in init's error buffer. */
#define TWINLOOM_REFUSED 1
/* The plugin failed (a caught exception or panic, a broken invariant): its fault. */
#define TWINLOOM_FAULT (-1)

/* Quality bytes (OPC UA Part 4 §7.39 severities); any other byte counts as bad. */
#define TWINLOOM_GOOD 0u
#define TWINLOOM_UNCERTAIN 1u
#define TWINLOOM_BAD 2u

/* Data types of writable properties, and kinds of setpoints. */
#define TWINLOOM_BOOLEAN 0u
#define TWINLOOM_INTEGER 1u
#define TWINLOOM_FLOAT 2u

/* Outcomes of a proposal (twinloom_proposal_outcome.outcome). */
#define TWINLOOM_WRITTEN 0u
#define TWINLOOM_OUTCOME_REFUSED 1u /* `rule` names the deciding rule */
#define TWINLOOM_SHADOW 2u
#define TWINLOOM_EXPIRED 3u
#define TWINLOOM_SUPERSEDED 4u
#define TWINLOOM_DISARMED 5u
#define TWINLOOM_DEVICE_ERROR 6u /* `device_error` says which */
#define TWINLOOM_READ_BACK_MISMATCH 7u

/* Device error kinds (twinloom_proposal_outcome.device_error). */
#define TWINLOOM_NOT_BOUND 0u
#define TWINLOOM_NOT_WRITABLE 1u
#define TWINLOOM_NOT_CONNECTED 2u
#define TWINLOOM_STOPPED 3u
#define TWINLOOM_TIMEOUT 4u
#define TWINLOOM_DEVICE_REJECTED 5u
#define TWINLOOM_ENCODING 6u
#define TWINLOOM_OUT_OF_RANGE 7u

/* Log levels. */
#define TWINLOOM_TRACE 0u
#define TWINLOOM_DEBUG 1u
#define TWINLOOM_INFO 2u
#define TWINLOOM_WARN 3u
#define TWINLOOM_ERROR 4u

/* Values of twinloom_plugin.panic_strategy. */
#define TWINLOOM_PANIC_NONE 0u   /* not Rust (C, C++): nothing to check */
#define TWINLOOM_PANIC_UNWIND 1u /* Rust, panic = "unwind": panics are caught at the boundary */
#define TWINLOOM_PANIC_ABORT 2u  /* Rust, panic = "abort": refused (a panic would end the daemon) */

/* UTF-8 text: `len` bytes at `ptr` (no terminating NUL; `ptr` may be NULL when `len` is 0). */
typedef struct twinloom_str {
  const uint8_t *ptr;
  size_t len;
} twinloom_str;

/* A property the plugin may propose writes to. */
typedef struct twinloom_writable_property {
  twinloom_str path;  /* `<asset path>/<property>` */
  uint32_t data_type; /* TWINLOOM_BOOLEAN, _INTEGER or _FLOAT */
} twinloom_writable_property;

/* The instance's properties, each list in index order. */
typedef struct twinloom_properties {
  const twinloom_str *inputs; /* subscribed inputs; a change's `properties` entry indexes this */
  size_t inputs_len;
  const twinloom_str *owned; /* derived properties; a derived value's index points here */
  size_t owned_len;
  const twinloom_writable_property *writable; /* setpoints; a proposal's index points here */
  size_t writable_len;
} twinloom_properties;

/* The changes since the previous call, column-wise: entry i is (properties[i], values[i],
 * qualities[i], source_times_ms[i]); every column has `len` entries. */
typedef struct twinloom_change_batch {
  const uint32_t *properties;     /* index into the inputs */
  const double *values;           /* engineering units; booleans 0 / 1; NaN when bad with no value */
  const uint8_t *qualities;       /* quality bytes */
  const int64_t *source_times_ms; /* ms since 1970-01-01T00:00:00Z */
  size_t len;
} twinloom_change_batch;

/* The final outcome of one proposal. */
typedef struct twinloom_proposal_outcome {
  uint64_t proposal;     /* the proposal's sequence number (0, 1, 2, ... per instance) */
  uint32_t index;        /* its index into the writable list */
  uint32_t outcome;      /* TWINLOOM_WRITTEN, ... */
  uint32_t device_error; /* with TWINLOOM_DEVICE_ERROR: TWINLOOM_NOT_BOUND, ...; else 0 */
  uint32_t reserved;     /* 0 */
  twinloom_str rule;     /* with TWINLOOM_OUTCOME_REFUSED: the deciding rule; else empty */
} twinloom_proposal_outcome;

/* A value to write; only the field of `kind` is read. */
typedef struct twinloom_setpoint {
  uint32_t kind;    /* TWINLOOM_BOOLEAN, _INTEGER or _FLOAT: the writable property's data type */
  uint32_t boolean; /* 0 or 1 */
  int64_t integer;
  double real;
} twinloom_setpoint;

/* A setpoint the plugin would like written; the control gate decides. */
typedef struct twinloom_write_proposal {
  twinloom_setpoint value;
  uint32_t index;        /* into the writable list */
  uint32_t reason_start; /* the reason: bytes [start, start + len) of the outputs' reasons */
  uint32_t reason_len;   /* (at most 256 are kept) */
  uint32_t reserved;     /* 0 */
} twinloom_write_proposal;

/* What a call returns. Derived values are column-wise: owned property indices[i] takes values[i]
 * with quality qualities[i] (finite unless the quality is bad). The plugin owns every pointer
 * until free_outputs. */
typedef struct twinloom_outputs {
  const uint32_t *indices;
  const double *values;
  const uint8_t *qualities;
  size_t values_len;
  const twinloom_write_proposal *proposals;
  size_t proposals_len;
  const uint8_t *reasons; /* UTF-8 */
  size_t reasons_len;
} twinloom_outputs;

/* What the host offers the plugin. */
typedef struct twinloom_host {
  uint32_t size; /* sizeof(twinloom_host) as the host was built; fields are only ever appended */
  uint32_t reserved;
  void *context; /* pass back to the host's functions */
  /* Writes one line to the daemon's log (escaped to one line, cut at 4 KiB, rate-limited). */
  void (*log)(void *context, uint32_t level, twinloom_str message);
} twinloom_host;

/* The plugin's table of functions (see the top of this file for lifetimes and threads). */
typedef struct twinloom_plugin {
  uint32_t abi_version;    /* TWINLOOM_PLUGIN_ABI_VERSION */
  uint32_t size;           /* sizeof(twinloom_plugin) as the plugin was built */
  uint32_t panic_strategy; /* TWINLOOM_PANIC_NONE for C */
  uint32_t reserved;       /* 0 */
  /* Makes an instance. `config` is the plugin's `config` table as TOML text. On success stores
   * the instance's state in *instance and returns TWINLOOM_OK; with wrong settings writes at most
   * error_cap bytes of UTF-8 to `error`, their count to *error_len, and returns
   * TWINLOOM_REFUSED. */
  int32_t (*init)(const twinloom_host *host, twinloom_str config,
                  const twinloom_properties *properties, void **instance, uint8_t *error,
                  size_t error_cap, size_t *error_len);
  /* Handles the changes since the previous call; `now_ms` is the call's time (ms since the Unix
   * epoch); `outcomes` are those that became known since the previous call. Fills *outputs. */
  int32_t (*on_changes)(void *instance, int64_t now_ms, const twinloom_change_batch *batch,
                        const twinloom_proposal_outcome *outcomes, size_t outcomes_len,
                        twinloom_outputs *outputs);
  /* Handles a tick, like on_changes without a batch. */
  int32_t (*on_tick)(void *instance, int64_t now_ms, const twinloom_proposal_outcome *outcomes,
                     size_t outcomes_len, twinloom_outputs *outputs);
  /* Frees what one call's outputs point to. */
  void (*free_outputs)(void *instance, twinloom_outputs *outputs);
  /* Frees the instance. */
  void (*drop)(void *instance);
} twinloom_plugin;

/* The entry point every native plugin exports. */
const twinloom_plugin *twinloom_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* TWINLOOM_PLUGIN_H */
