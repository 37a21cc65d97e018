/* nvrtc.c: one NVRTC compilation to a CUBIN, with its log and the ptxas -v resource report.
** Errors carry the kernel, the arch, the options and the full log. */
#include "nvrtc.h"

/* CUDA's header (see the note at the top of runtime/nvrtc.h); it tests undefined macros. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wundef"
#include <nvrtc.h>
#pragma GCC diagnostic pop
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const fixed_options[] = {PAT_NVRTC_FIXED_OPTIONS};
#define NUM_FIXED ((int)(sizeof fixed_options / sizeof fixed_options[0]))

static const char *program_name(const pat_nvrtc_job *job)
{
  return job->program_name ? job->program_name : "kernel.cu";
}

static const char *kernel_label(const pat_nvrtc_job *job)
{
  return job->kernel_name ? job->kernel_name : program_name(job);
}

/* Appends s to buf (as in snprintf: len counts everything, buf gets what fits). */
static void append(char *buf, size_t n, size_t *len, const char *s)
{
  size_t k = strlen(s);
  if (*len + 1 < n) {
    size_t room = n - 1 - *len;
    memcpy(buf + *len, s, k < room ? k : room);
    buf[*len + (k < room ? k : room)] = '\0';
  }
  *len += k;
}

size_t pat_nvrtc_options_string(const pat_nvrtc_job *job, char *buf, size_t n)
{
  char arch[48];
  size_t len = 0;
  if (!buf)
    n = 0;
  if (n)
    buf[0] = '\0';
  snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d%s", job->arch, job->arch_specific ? "a" : "");
  append(buf, n, &len, arch);
  for (int i = 0; i < NUM_FIXED; i++) {
    append(buf, n, &len, " ");
    append(buf, n, &len, fixed_options[i]);
  }
  for (int i = 0; i < job->num_options; i++) {
    append(buf, n, &len, " ");
    append(buf, n, &len, job->options[i] ? job->options[i] : "");
  }
  return len;
}

int pat_nvrtc_version(int *major, int *minor)
{
  int ma = 0, mi = 0;
  if (nvrtcVersion(&ma, &mi) != NVRTC_SUCCESS)
    return -1;
  if (major)
    *major = ma;
  if (minor)
    *minor = mi;
  return 0;
}

/* The number written just before the first occurrence of `what` in line[0..len), or -1. */
static int number_before(const char *line, size_t len, const char *what)
{
  size_t wl = strlen(what);
  for (size_t i = 0; i + wl <= len; i++) {
    if (memcmp(line + i, what, wl) != 0)
      continue;
    size_t end = i;
    while (end > 0 && line[end - 1] == ' ')
      end--;
    size_t start = end;
    while (start > 0 && line[start - 1] >= '0' && line[start - 1] <= '9')
      start--;
    if (start == end)
      return -1;
    long v = 0;
    for (size_t k = start; k < end && v <= INT32_MAX; k++)
      v = v * 10 + (line[k] - '0');
    return v > INT32_MAX ? INT32_MAX : (int)v;
  }
  return -1;
}

/* If line[0..len) contains `prefix`, the name after it up to `stop` (or the end of the line)
** is copied to name (truncated to n) and 1 is returned; otherwise 0. */
static int name_after(const char *line, size_t len, const char *prefix, char stop, char *name,
                      size_t n)
{
  size_t pl = strlen(prefix);
  for (size_t i = 0; i + pl <= len; i++) {
    if (memcmp(line + i, prefix, pl) != 0)
      continue;
    size_t s = i + pl, e = s;
    while (e < len && line[e] != stop && line[e] != '\r')
      e++;
    size_t k = e - s < n - 1 ? e - s : n - 1;
    memcpy(name, line + s, k);
    name[k] = '\0';
    return 1;
  }
  return 0;
}

void pat_nvrtc_parse_resources(const char *log, const char *kernel, pat_nvrtc_result *res)
{
  res->registers = res->spill_store_bytes = res->spill_load_bytes = -1;
  res->stack_frame_bytes = res->static_smem_bytes = -1;
  if (!log)
    return;
  char entry_name[512] = "", name[512];
  int in_entry = 0, found = 0, props = 0;
  for (const char *line = log; *line;) {
    const char *nl = strchr(line, '\n');
    size_t len = nl ? (size_t)(nl - line) : strlen(line);

    if (name_after(line, len, "Compiling entry function '", '\'', name, sizeof name)) {
      if (in_entry)
        break;  /* the chosen entry's report is over */
      in_entry = !found && (!kernel || strcmp(name, kernel) == 0);
      if (in_entry) {
        found = 1;
        snprintf(entry_name, sizeof entry_name, "%s", name);
      }
      props = 0;
    } else if (in_entry && name_after(line, len, "Function properties for ", '\n', name,
                                      sizeof name)) {
      /* Non-inlined device functions report their own properties; keep the entry's. */
      props = strcmp(name, entry_name) == 0;
    } else if (in_entry && props && number_before(line, len, "bytes stack frame") >= 0) {
      res->stack_frame_bytes = number_before(line, len, "bytes stack frame");
      res->spill_store_bytes = number_before(line, len, "bytes spill stores");
      res->spill_load_bytes = number_before(line, len, "bytes spill loads");
      props = 0;
    } else if (in_entry && number_before(line, len, "registers") >= 0) {
      res->registers = number_before(line, len, "registers");
      /* ptxas leaves out "N bytes smem" when the kernel has none. */
      int smem = number_before(line, len, "bytes smem");
      res->static_smem_bytes = smem >= 0 ? smem : 0;
    }
    line = nl ? nl + 1 : line + len;
  }
}

/* Writes the failure message: what was compiled, with which options, why, and the log. */
static void compile_error(const pat_nvrtc_job *job, const char *what, nvrtcResult r,
                          const char *log, char *err, size_t errlen)
{
  if (!err || !errlen)
    return;
  size_t olen = pat_nvrtc_options_string(job, NULL, 0);
  char *opts = malloc(olen + 1);
  if (opts)
    pat_nvrtc_options_string(job, opts, olen + 1);
  snprintf(err, errlen, "NVRTC: %s failed for kernel '%s' (%s), sm_%d%s: %s\noptions: %s%s%s",
           what, kernel_label(job), program_name(job), job->arch, job->arch_specific ? "a" : "",
           nvrtcGetErrorString(r),
           opts ? opts : "(out of memory)", log && *log ? "\nlog:\n" : "",
           log && *log ? log : "");
  free(opts);
}

/* Reads the program log into a malloc'd string; NULL (with the status in *r) on failure. */
static char *program_log(nvrtcProgram prog, nvrtcResult *r)
{
  size_t n = 0;
  *r = nvrtcGetProgramLogSize(prog, &n);
  if (*r != NVRTC_SUCCESS)
    return NULL;
  char *log = malloc(n + 1);
  if (!log) {
    *r = NVRTC_ERROR_OUT_OF_MEMORY;
    return NULL;
  }
  log[0] = '\0';
  if (n > 0) {
    *r = nvrtcGetProgramLog(prog, log);
    if (*r != NVRTC_SUCCESS) {
      free(log);
      return NULL;
    }
  }
  log[n] = '\0';
  return log;
}

int pat_nvrtc_compile(const pat_nvrtc_job *job, pat_nvrtc_result *res, char *err, size_t errlen)
{
  nvrtcProgram prog = NULL;
  nvrtcResult r = NVRTC_SUCCESS;
  const char **argv = NULL;
  char *log = NULL;
  void *cubin = NULL;
  char arch[48];

  if (res)
    memset(res, 0, sizeof *res);
  if (!job || !res || !job->source || job->arch <= 0 || job->num_options < 0 ||
      job->num_headers < 0 || (job->num_options && !job->options) ||
      (job->num_headers && (!job->header_names || !job->header_sources))) {
    if (err && errlen)
      snprintf(err, errlen, "NVRTC: invalid compile job (%s)",
               !job ? "no job" : !res ? "no result" : !job->source ? "no source"
               : job->arch <= 0 ? "arch must be positive, e.g. 90" : "bad option or header arrays");
    return -1;
  }

  int argc = 1 + NUM_FIXED + job->num_options;
  argv = malloc(sizeof *argv * (size_t)argc);
  if (!argv) {
    r = NVRTC_ERROR_OUT_OF_MEMORY;
    compile_error(job, "allocating options", r, NULL, err, errlen);
    goto fail;
  }
  snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d%s", job->arch, job->arch_specific ? "a" : "");
  argv[0] = arch;
  for (int i = 0; i < NUM_FIXED; i++)
    argv[1 + i] = fixed_options[i];
  for (int i = 0; i < job->num_options; i++)
    argv[1 + NUM_FIXED + i] = job->options[i] ? job->options[i] : "";

  r = nvrtcCreateProgram(&prog, job->source, program_name(job), job->num_headers,
                         job->num_headers ? job->header_sources : NULL,
                         job->num_headers ? job->header_names : NULL);
  if (r != NVRTC_SUCCESS) {
    prog = NULL;
    compile_error(job, "nvrtcCreateProgram", r, NULL, err, errlen);
    goto fail;
  }

  nvrtcResult cr = nvrtcCompileProgram(prog, argc, argv);
  log = program_log(prog, &r);
  if (!log) {
    compile_error(job, "nvrtcGetProgramLog", r, NULL, err, errlen);
    goto fail;
  }
  if (cr != NVRTC_SUCCESS) {
    r = cr;
    compile_error(job, "compilation", r, log, err, errlen);
    goto fail;
  }

  size_t size = 0;
  r = nvrtcGetCUBINSize(prog, &size);
  if (r != NVRTC_SUCCESS || size == 0) {
    compile_error(job, r != NVRTC_SUCCESS ? "nvrtcGetCUBINSize" : "nvrtcGetCUBINSize (empty)",
                  r, log, err, errlen);
    goto fail;
  }
  cubin = malloc(size);
  if (!cubin) {
    r = NVRTC_ERROR_OUT_OF_MEMORY;
    compile_error(job, "allocating the CUBIN", r, log, err, errlen);
    goto fail;
  }
  r = nvrtcGetCUBIN(prog, cubin);
  if (r != NVRTC_SUCCESS) {
    compile_error(job, "nvrtcGetCUBIN", r, log, err, errlen);
    goto fail;
  }
  r = nvrtcDestroyProgram(&prog);
  prog = NULL;
  if (r != NVRTC_SUCCESS) {
    compile_error(job, "nvrtcDestroyProgram", r, log, err, errlen);
    goto fail;
  }

  res->cubin = cubin;
  res->cubin_size = size;
  res->log = log;
  pat_nvrtc_parse_resources(log, job->kernel_name, res);
  free(argv);
  return 0;

fail:
  if (prog)
    nvrtcDestroyProgram(&prog);
  free(cubin);
  free(log);
  free(argv);
  return -1;
}

void pat_nvrtc_result_free(pat_nvrtc_result *res)
{
  if (!res)
    return;
  free(res->cubin);
  free(res->log);
  memset(res, 0, sizeof *res);
}
