/*
 * A pass-through HTTP filter for Envoy's dynamic modules (Envoy 1.40.0): it holds the
 * request headers until the whole request body has arrived, reads every byte of that body
 * (a byte sum the compiler cannot drop), decides nothing and lets the request through.
 * bench/authz_floor.py loads it as the `module` row: the cost of an in-Envoy decision
 * point that inspects the body, without the decision.
 *
 * The first request body the filter reads is logged once at warning level ("read_body
 * filter: first request body N bytes, sum S"), so the benchmark can check the filter ran
 * and saw the body before it measures.
 *
 * Build (bench/_native.py's build_module): gcc -O2 -shared -fPIC -o libread_body_filter.so
 *
 * The declarations below are the subset of Envoy's dynamic-module C ABI this filter needs,
 * written from Envoy's source/extensions/dynamic_modules/abi/abi.h (Apache-2.0, ABI version
 * "v0.1.0" there; Envoy 1.40.0 reports "v0.2.0", which is backward compatible with v0.1.y
 * and is what this module reports). Event hooks (envoy_dynamic_module_on_*) are exported
 * by the module and all of the HTTP filter's required ones must be present, even those
 * this filter never uses; callbacks (envoy_dynamic_module_callback_*) are resolved from
 * the Envoy binary when the module is loaded.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define ABI_VERSION "v0.2.0"
#define EXPORT __attribute__((visibility("default")))

/* ------------------------------------------------------------------ ABI types (subset) */

typedef struct {
  const char* ptr;
  size_t length;
} envoy_buffer; /* envoy_dynamic_module_type_envoy_buffer / _module_buffer: same layout */

typedef enum {
  body_received_request = 0, /* ..._http_body_type_ReceivedRequestBody */
  body_buffered_request = 1, /* ..._http_body_type_BufferedRequestBody */
} body_type;

enum { log_warn = 3 }; /* envoy_dynamic_module_type_log_level_Warn */

/* FilterHeadersStatus, FilterDataStatus and FilterTrailersStatus, as Envoy casts them. */
enum { headers_continue = 0, headers_stop_iteration = 1 };
enum { body_continue = 0, body_stop_iteration_and_buffer = 1 };
enum { trailers_continue = 0 };

/* ------------------------------------------------------------------ callbacks (Envoy's) */

extern size_t envoy_dynamic_module_callback_http_get_body_chunks_size(void* filter_envoy_ptr,
                                                                      body_type type);
extern bool envoy_dynamic_module_callback_http_get_body_chunks(void* filter_envoy_ptr,
                                                               body_type type,
                                                               envoy_buffer* result);
extern bool envoy_dynamic_module_callback_http_received_buffered_request_body(
    void* filter_envoy_ptr);
extern void envoy_dynamic_module_callback_log(int level, envoy_buffer message);

/* ------------------------------------------------------------------ the filter */

static int config_token; /* the in-module config: nothing to keep */
static int filter_token; /* the in-module filter: no per-stream state either */
static bool logged; /* one worker (--concurrency 1): one log line per Envoy */

/* Every byte of every chunk of one kind of request body: (bytes, sum). */
static size_t read_chunks(void* filter, body_type type, uint64_t* sum) {
  enum { INLINE = 16 };
  envoy_buffer inline_chunks[INLINE];
  size_t count = envoy_dynamic_module_callback_http_get_body_chunks_size(filter, type);
  if (count == 0) {
    return 0;
  }
  envoy_buffer* chunks = count <= INLINE ? inline_chunks : malloc(count * sizeof(envoy_buffer));
  if (chunks == NULL) {
    return 0;
  }
  size_t bytes = 0;
  if (envoy_dynamic_module_callback_http_get_body_chunks(filter, type, chunks)) {
    for (size_t i = 0; i < count; i++) {
      const unsigned char* p = (const unsigned char*)chunks[i].ptr;
      for (size_t j = 0; j < chunks[i].length; j++) {
        *sum += p[j];
      }
      bytes += chunks[i].length;
    }
  }
  if (chunks != inline_chunks) {
    free(chunks);
  }
  return bytes;
}

EXPORT const char* envoy_dynamic_module_on_program_init(void) { return ABI_VERSION; }

EXPORT const void* envoy_dynamic_module_on_http_filter_config_new(void* config_envoy_ptr,
                                                                  envoy_buffer name,
                                                                  envoy_buffer config) {
  (void)config_envoy_ptr;
  (void)name;
  (void)config;
  return &config_token;
}

EXPORT void envoy_dynamic_module_on_http_filter_config_destroy(const void* config) {
  (void)config;
}

EXPORT const void* envoy_dynamic_module_on_http_filter_new(const void* config,
                                                           void* filter_envoy_ptr) {
  (void)config;
  (void)filter_envoy_ptr;
  return &filter_token;
}

EXPORT int envoy_dynamic_module_on_http_filter_request_headers(void* filter, const void* self,
                                                               bool end_of_stream) {
  (void)filter;
  (void)self;
  /* With a body to come, hold the headers (nothing goes upstream) until it is read. */
  return end_of_stream ? headers_continue : headers_stop_iteration;
}

EXPORT int envoy_dynamic_module_on_http_filter_request_body(void* filter, const void* self,
                                                            bool end_of_stream) {
  (void)self;
  if (!end_of_stream) {
    return body_stop_iteration_and_buffer; /* Envoy buffers it; read it all at the end */
  }
  uint64_t sum = 0;
  size_t bytes = read_chunks(filter, body_received_request, &sum);
  if (!envoy_dynamic_module_callback_http_received_buffered_request_body(filter)) {
    bytes += read_chunks(filter, body_buffered_request, &sum);
  }
  __asm__ volatile("" : : "r"(sum) : "memory"); /* the sum is used: the read stays */
  if (!logged) {
    logged = true;
    char line[128];
    int n = snprintf(line, sizeof line, "read_body filter: first request body %zu bytes, sum %llu",
                     bytes, (unsigned long long)sum);
    envoy_dynamic_module_callback_log(log_warn, (envoy_buffer){line, (size_t)n});
  }
  return body_continue;
}

EXPORT int envoy_dynamic_module_on_http_filter_request_trailers(void* filter, const void* self) {
  (void)filter;
  (void)self;
  return trailers_continue;
}

EXPORT int envoy_dynamic_module_on_http_filter_response_headers(void* filter, const void* self,
                                                                bool end_of_stream) {
  (void)filter;
  (void)self;
  (void)end_of_stream;
  return headers_continue;
}

EXPORT int envoy_dynamic_module_on_http_filter_response_body(void* filter, const void* self,
                                                             bool end_of_stream) {
  (void)filter;
  (void)self;
  (void)end_of_stream;
  return body_continue;
}

EXPORT int envoy_dynamic_module_on_http_filter_response_trailers(void* filter, const void* self) {
  (void)filter;
  (void)self;
  return trailers_continue;
}

EXPORT void envoy_dynamic_module_on_http_filter_stream_complete(void* filter, const void* self) {
  (void)filter;
  (void)self;
}

EXPORT void envoy_dynamic_module_on_http_filter_destroy(const void* self) { (void)self; }

/* Required by Envoy's loader but never called here: this filter makes no callouts, opens no
 * streams, schedules nothing and does not watch the downstream write buffer. Their
 * arguments are ignored, and all return nothing. */
EXPORT void envoy_dynamic_module_on_http_filter_http_callout_done(void) {}
EXPORT void envoy_dynamic_module_on_http_filter_http_stream_headers(void) {}
EXPORT void envoy_dynamic_module_on_http_filter_http_stream_data(void) {}
EXPORT void envoy_dynamic_module_on_http_filter_http_stream_trailers(void) {}
EXPORT void envoy_dynamic_module_on_http_filter_http_stream_complete(void) {}
EXPORT void envoy_dynamic_module_on_http_filter_http_stream_reset(void) {}
EXPORT void envoy_dynamic_module_on_http_filter_scheduled(void) {}
EXPORT void envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(void) {}
EXPORT void envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(void) {}
