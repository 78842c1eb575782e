/*
 * fake_nvml.c - a fake NVIDIA driver library (libnvidia-ml.so.1) for tests.
 *
 * pynvml's real code loads this with ctypes exactly as it loads the real
 * driver (CDLL("libnvidia-ml.so.1")), so its marshalling runs unchanged on a
 * machine without a GPU. Point the dynamic loader at it with LD_LIBRARY_PATH
 * set before the Python process starts.
 *
 * Behaviour comes from a line-based scenario file named by the environment
 * variable FAKE_NVML_SCENARIO. The file is re-read on every call, so a test can
 * edit it while a process runs. Lines (blank lines and '#' comments ignored):
 *
 *   driver <version>                      e.g. driver 535.183.01
 *   gpu <index> key=value ...             keys: uuid bus name total_mib used_mib
 *                                         reserved_mib temp clocks_reasons
 *                                         ecc_corrected ecc_uncorrected (volatile)
 *                                         ecc_corrected_agg ecc_uncorrected_agg
 *                                         (aggregate; default: the volatile count)
 *                                         rr_corr rr_unc rr_pending rr_failure
 *                                         retired_sbe retired_dbe retired_pending
 *                                         temp_slowdown temp_shutdown temp_gpu_max
 *                                         (0: that threshold is NOT_SUPPORTED)
 *                                         pcie_replays pci_device_id
 *                                         ecc_rate ecc_accel: the correctable counts
 *                                         (both) also gain ecc_rate * t +
 *                                         ecc_accel * t^2 / 2, t: seconds since
 *                                         the file was written (a trend over time)
 *                                         ecc=notsupported; values may be "quoted"
 *   proc <gpu_index> pid=<pid> used_mib=<mib>
 *   lost <gpu_index>                      device calls return NVML_ERROR_GPU_IS_LOST
 *   hang <function> [gpu_index]           the call blocks until the line is removed
 *   notsupported <function> [gpu_index]   the call returns NVML_ERROR_NOT_SUPPORTED
 *   fail <function> <code> [gpu_index]    the call returns <code>
 *   xid <gpu_index> <xid>                 an Xid event, delivered once per event set
 *                                         by nvmlEventSetWait (append-only)
 *
 * Function names are the exported C names (nvmlDeviceGetMemoryInfo_v2, ...);
 * every nvmlInit variant answers to "nvmlInit".
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

#define MAX_GPUS 64
#define MAX_PROCS 256
#define MAX_RULES 64
#define MAX_XIDS 4096
#define NAME_LEN 96
#define NA_UINT 0xFFFFFFFFu
#define EVENT_XID 0x8ull
#define MIB (1024ull * 1024ull)

/* ---- the structs pynvml marshals (field order and types as in pynvml.py) ---- */
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
#define nvmlMemory_v2 (unsigned int)(sizeof(nvmlMemory_v2_t) | (2 << 24))

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} nvmlProcessInfo_v1_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_v2_t; /* v3 has the same layout */

typedef struct {
    unsigned int version;
    unsigned int sensorType;
    int temperature;
} nvmlTemperature_v1_t;
#define nvmlTemperature_v1 (unsigned int)(sizeof(nvmlTemperature_v1_t) | (1 << 24))

typedef struct fake_device *nvmlDevice_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType, eventData;
} nvmlEventData_v1_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType, eventData;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlEventData_t;

/* ---- scenario state ---- */
struct fake_device { unsigned int index; }; /* a handle: stable across re-reads */
static struct fake_device handles[MAX_GPUS];

struct gpu {
    int present, lost, ecc_notsupported;
    char uuid[NAME_LEN], bus[32], name[NAME_LEN];
    unsigned long long total_mib, used_mib, reserved_mib, clocks_reasons;
    unsigned long long ecc_corrected, ecc_uncorrected, ecc_corrected_agg, ecc_uncorrected_agg;
    unsigned int temp, rr_corr, rr_unc, rr_pending, rr_failure, retired_sbe, retired_dbe, pci_device_id;
    unsigned int retired_pending, temp_slowdown, temp_shutdown, temp_gpu_max, pcie_replays;
};
struct proc { unsigned int gpu, pid; unsigned long long used_mib; };
struct rule { char fn[64]; int gpu; int code; }; /* gpu -1: any; code 0 in hang rules */
struct xid { unsigned int gpu; unsigned long long xid; };

struct scenario {
    int ok;
    char driver[80];
    unsigned int count; /* highest gpu index + 1 */
    struct gpu gpus[MAX_GPUS];
    unsigned int nprocs, nrules, nhangs, nxids;
    struct proc procs[MAX_PROCS];
    struct rule rules[MAX_RULES], hangs[MAX_RULES];
    struct xid xids[MAX_XIDS];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct scenario S; /* guarded by lock */
static int initialized;   /* nvmlInit refcount, guarded by lock */
static double file_age;   /* seconds since the scenario file was written, guarded by lock */

struct event_set { unsigned long long mask[MAX_GPUS]; unsigned int delivered; };

static void copy_str(char *dst, size_t size, const char *src) {
    snprintf(dst, size, "%s", src);
}

/* Next whitespace-separated token; a token may be key="value with spaces". */
static char *next_token(char **cursor) {
    char *p = *cursor;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    if (!*p) return NULL;
    char *start = p, *out = p;
    int quoted = 0;
    for (; *p; p++) {
        if (*p == '"') { quoted = !quoted; continue; }
        if (!quoted && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) { p++; break; }
        *out++ = *p;
    }
    *out = '\0';
    *cursor = p;
    return start;
}

static unsigned long long num(const char *s) { return strtoull(s, NULL, 0); }

static void parse_gpu(char *cursor, struct gpu *g, unsigned int index) {
    memset(g, 0, sizeof *g);
    g->present = 1;
    g->total_mib = 6144;
    g->temp = 40;
    g->pci_device_id = 0x1c0710de;
    g->temp_slowdown = 90;
    g->temp_shutdown = 95;
    g->temp_gpu_max = 87;
    int agg_corr = 0, agg_unc = 0;
    double ecc_rate = 0, ecc_accel = 0;
    snprintf(g->uuid, sizeof g->uuid, "GPU-00000000-0000-0000-0000-%012u", index);
    snprintf(g->bus, sizeof g->bus, "00000000:%02X:00.0", index + 1);
    copy_str(g->name, sizeof g->name, "NVIDIA Fake GPU");
    char *tok;
    while ((tok = next_token(&cursor))) {
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = '\0';
        const char *k = tok, *v = eq + 1;
        if (!strcmp(k, "uuid")) copy_str(g->uuid, sizeof g->uuid, v);
        else if (!strcmp(k, "bus")) copy_str(g->bus, sizeof g->bus, v);
        else if (!strcmp(k, "name")) copy_str(g->name, sizeof g->name, v);
        else if (!strcmp(k, "total_mib")) g->total_mib = num(v);
        else if (!strcmp(k, "used_mib")) g->used_mib = num(v);
        else if (!strcmp(k, "reserved_mib")) g->reserved_mib = num(v);
        else if (!strcmp(k, "temp")) g->temp = (unsigned int)num(v);
        else if (!strcmp(k, "clocks_reasons")) g->clocks_reasons = num(v);
        else if (!strcmp(k, "ecc_corrected")) g->ecc_corrected = num(v);
        else if (!strcmp(k, "ecc_uncorrected")) g->ecc_uncorrected = num(v);
        else if (!strcmp(k, "ecc_corrected_agg")) { g->ecc_corrected_agg = num(v); agg_corr = 1; }
        else if (!strcmp(k, "ecc_uncorrected_agg")) { g->ecc_uncorrected_agg = num(v); agg_unc = 1; }
        else if (!strcmp(k, "retired_pending")) g->retired_pending = (unsigned int)num(v);
        else if (!strcmp(k, "temp_slowdown")) g->temp_slowdown = (unsigned int)num(v);
        else if (!strcmp(k, "temp_shutdown")) g->temp_shutdown = (unsigned int)num(v);
        else if (!strcmp(k, "temp_gpu_max")) g->temp_gpu_max = (unsigned int)num(v);
        else if (!strcmp(k, "pcie_replays")) g->pcie_replays = (unsigned int)num(v);
        else if (!strcmp(k, "rr_corr")) g->rr_corr = (unsigned int)num(v);
        else if (!strcmp(k, "rr_unc")) g->rr_unc = (unsigned int)num(v);
        else if (!strcmp(k, "rr_pending")) g->rr_pending = (unsigned int)num(v);
        else if (!strcmp(k, "rr_failure")) g->rr_failure = (unsigned int)num(v);
        else if (!strcmp(k, "retired_sbe")) g->retired_sbe = (unsigned int)num(v);
        else if (!strcmp(k, "retired_dbe")) g->retired_dbe = (unsigned int)num(v);
        else if (!strcmp(k, "pci_device_id")) g->pci_device_id = (unsigned int)num(v);
        else if (!strcmp(k, "ecc_rate")) ecc_rate = strtod(v, NULL);
        else if (!strcmp(k, "ecc_accel")) ecc_accel = strtod(v, NULL);
        else if (!strcmp(k, "ecc")) g->ecc_notsupported = !strcmp(v, "notsupported");
    }
    if (!agg_corr) g->ecc_corrected_agg = g->ecc_corrected;
    unsigned long long gained = (unsigned long long)(ecc_rate * file_age + ecc_accel * file_age * file_age / 2);
    g->ecc_corrected += gained;
    g->ecc_corrected_agg += gained;
    if (!agg_unc) g->ecc_uncorrected_agg = g->ecc_uncorrected;
}

static void parse_rule(char *cursor, struct rule *r, int with_code) {
    char *fn = next_token(&cursor), *a = next_token(&cursor), *b = next_token(&cursor);
    copy_str(r->fn, sizeof r->fn, fn ? fn : "");
    r->gpu = -1;
    r->code = NVML_ERROR_NOT_SUPPORTED;
    if (with_code) {
        r->code = a ? (int)num(a) : NVML_ERROR_UNKNOWN;
        if (b) r->gpu = (int)num(b);
    } else if (a) {
        r->gpu = (int)num(a);
    }
}

/* Re-read the scenario file into S (caller holds lock). */
static void reload(void) {
    memset(&S, 0, sizeof S);
    copy_str(S.driver, sizeof S.driver, "535.183.01");
    const char *path = getenv("FAKE_NVML_SCENARIO");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return;
    S.ok = 1;
    struct stat st;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    file_age = 0;
    if (fstat(fileno(f), &st) == 0) {
        file_age = (double)(now.tv_sec - st.st_mtim.tv_sec) + (now.tv_nsec - st.st_mtim.tv_nsec) / 1e9;
        if (file_age < 0) file_age = 0;
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *cursor = line, *kind = next_token(&cursor);
        if (!kind || kind[0] == '#') continue;
        if (!strcmp(kind, "driver")) {
            char *v = next_token(&cursor);
            if (v) copy_str(S.driver, sizeof S.driver, v);
        } else if (!strcmp(kind, "gpu")) {
            char *idx = next_token(&cursor);
            unsigned int i = idx ? (unsigned int)num(idx) : MAX_GPUS;
            if (i >= MAX_GPUS) continue;
            parse_gpu(cursor, &S.gpus[i], i);
            if (i + 1 > S.count) S.count = i + 1;
        } else if (!strcmp(kind, "proc") && S.nprocs < MAX_PROCS) {
            char *idx = next_token(&cursor), *tok;
            struct proc *p = &S.procs[S.nprocs++];
            p->gpu = idx ? (unsigned int)num(idx) : 0;
            p->pid = 0;
            p->used_mib = 0;
            while ((tok = next_token(&cursor))) {
                if (!strncmp(tok, "pid=", 4)) p->pid = (unsigned int)num(tok + 4);
                else if (!strncmp(tok, "used_mib=", 9)) p->used_mib = num(tok + 9);
            }
        } else if (!strcmp(kind, "lost")) {
            char *idx = next_token(&cursor);
            unsigned int i = idx ? (unsigned int)num(idx) : MAX_GPUS;
            if (i < MAX_GPUS) S.gpus[i].lost = 1;
        } else if (!strcmp(kind, "hang") && S.nhangs < MAX_RULES) {
            parse_rule(cursor, &S.hangs[S.nhangs++], 0);
        } else if (!strcmp(kind, "notsupported") && S.nrules < MAX_RULES) {
            parse_rule(cursor, &S.rules[S.nrules++], 0);
        } else if (!strcmp(kind, "fail") && S.nrules < MAX_RULES) {
            parse_rule(cursor, &S.rules[S.nrules++], 1);
        } else if (!strcmp(kind, "xid") && S.nxids < MAX_XIDS) {
            char *idx = next_token(&cursor), *x = next_token(&cursor);
            if (!idx || !x) continue;
            S.xids[S.nxids].gpu = (unsigned int)num(idx);
            S.xids[S.nxids].xid = num(x);
            S.nxids++;
        }
    }
    fclose(f);
}

static int rule_matches(const struct rule *r, const char *fn, int gpu) {
    return !strcmp(r->fn, fn) && (r->gpu < 0 || r->gpu == gpu);
}

static void sleep_ms(unsigned int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/*
 * Common prologue. Takes the lock, re-reads the scenario, blocks while a
 * matching "hang" line is present, then answers an injected failure, an
 * uninitialised library, an unknown or lost device. Returns with the lock held.
 */
static nvmlReturn_t enter(const char *fn, nvmlDevice_t dev, int need_init) {
    int valid = dev && dev >= handles && dev < handles + MAX_GPUS;
    int gpu = valid ? (int)(dev - handles) : -1;
    for (;;) {
        pthread_mutex_lock(&lock);
        reload();
        int hung = 0;
        for (unsigned int i = 0; i < S.nhangs; i++) hung |= rule_matches(&S.hangs[i], fn, gpu);
        if (!hung) break;
        pthread_mutex_unlock(&lock);
        sleep_ms(50);
    }
    for (unsigned int i = 0; i < S.nrules; i++)
        if (rule_matches(&S.rules[i], fn, gpu)) return S.rules[i].code;
    if (need_init && !initialized) return NVML_ERROR_UNINITIALIZED;
    if (dev) {
        if (!valid || !S.gpus[gpu].present) return NVML_ERROR_INVALID_ARGUMENT;
        if (S.gpus[gpu].lost) return NVML_ERROR_GPU_IS_LOST;
    }
    return NVML_SUCCESS;
}

#define ENTER(dev)                                           \
    do {                                                     \
        nvmlReturn_t rc_ = enter(__func__, (dev), 1);        \
        if (rc_ != NVML_SUCCESS) {                           \
            pthread_mutex_unlock(&lock);                     \
            return rc_;                                      \
        }                                                    \
    } while (0)
#define RETURN(rc)                   \
    do {                             \
        pthread_mutex_unlock(&lock); \
        return (rc);                 \
    } while (0)

static struct gpu *G(nvmlDevice_t dev) { return &S.gpus[dev->index]; }

static nvmlReturn_t put_str(char *dst, unsigned int length, const char *src) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

/* ---- init / shutdown / strings ---- */
static nvmlReturn_t do_init(void) {
    nvmlReturn_t rc = enter("nvmlInit", NULL, 0);
    if (rc == NVML_SUCCESS && !S.ok) rc = NVML_ERROR_DRIVER_NOT_LOADED; /* no scenario file */
    if (rc == NVML_SUCCESS) initialized++;
    RETURN(rc);
}
EXPORT nvmlReturn_t nvmlInit(void) { return do_init(); }
EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init(); }
EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return do_init(); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
    ENTER(NULL);
    initialized--;
    RETURN(NVML_SUCCESS);
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER(NULL);
    RETURN(put_str(version, length, S.driver));
}

/* ---- device enumeration ---- */
static nvmlReturn_t get_count(const char *fn, unsigned int *count) {
    nvmlReturn_t rc = enter(fn, NULL, 1);
    if (rc == NVML_SUCCESS) {
        if (count) *count = S.count;
        else rc = NVML_ERROR_INVALID_ARGUMENT;
    }
    RETURN(rc);
}
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) { return get_count(__func__, count); }
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return get_count(__func__, count); }

static nvmlReturn_t by_index(const char *fn, unsigned int index, nvmlDevice_t *device) {
    nvmlReturn_t rc = enter(fn, NULL, 1);
    if (rc == NVML_SUCCESS) {
        if (!device || index >= MAX_GPUS || !S.gpus[index].present) {
            rc = NVML_ERROR_INVALID_ARGUMENT;
        } else {
            handles[index].index = index;
            *device = &handles[index];
            if (S.gpus[index].lost) rc = NVML_ERROR_GPU_IS_LOST;
        }
    }
    RETURN(rc);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    return by_index(__func__, index, device);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return by_index(__func__, index, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    ENTER(NULL);
    if (!uuid || !device) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    for (unsigned int i = 0; i < MAX_GPUS; i++) {
        if (S.gpus[i].present && !strcmp(S.gpus[i].uuid, uuid)) {
            handles[i].index = i;
            *device = &handles[i];
            RETURN(S.gpus[i].lost ? NVML_ERROR_GPU_IS_LOST : NVML_SUCCESS);
        }
    }
    RETURN(NVML_ERROR_NOT_FOUND);
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    ENTER(device);
    if (!index) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *index = device->index;
    RETURN(NVML_SUCCESS);
}

/* ---- identity ---- */
EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    ENTER(device);
    RETURN(put_str(uuid, length, G(device)->uuid));
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    ENTER(device);
    RETURN(put_str(name, length, G(device)->name));
}

static nvmlReturn_t pci_info(const char *fn, nvmlDevice_t device, nvmlPciInfo_t *pci) {
    nvmlReturn_t rc = enter(fn, device, 1);
    if (rc == NVML_SUCCESS && !pci) rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == NVML_SUCCESS) {
        const struct gpu *g = G(device);
        memset(pci, 0, sizeof *pci);
        copy_str(pci->busId, sizeof pci->busId, g->bus);
        /* legacy 16-byte id: "DDDD:BB:DD.F" with a 4-digit domain */
        const char *colon = strchr(g->bus, ':');
        unsigned int dom = 0, bus = 0, dev = 0, fun = 0;
        sscanf(g->bus, "%x:%x:%x.%x", &dom, &bus, &dev, &fun);
        snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X%s", dom & 0xFFFF, colon ? colon : "");
        pci->domain = dom;
        pci->bus = bus;
        pci->device = dev;
        pci->pciDeviceId = g->pci_device_id;
        pci->pciSubSystemId = 0;
    }
    RETURN(rc);
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    return pci_info(__func__, device, pci);
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    return pci_info(__func__, device, pci);
}

/* ---- memory ---- */
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    ENTER(device);
    if (!memory) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    const struct gpu *g = G(device);
    unsigned long long used = g->used_mib + g->reserved_mib; /* v1 counts the reserved memory as used */
    memory->total = g->total_mib * MIB;
    memory->used = used * MIB;
    memory->free = (g->total_mib > used ? g->total_mib - used : 0) * MIB;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    ENTER(device);
    if (!memory) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (memory->version != nvmlMemory_v2) RETURN(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    const struct gpu *g = G(device);
    unsigned long long used = g->used_mib + g->reserved_mib;
    memory->total = g->total_mib * MIB;
    memory->reserved = g->reserved_mib * MIB;
    memory->used = g->used_mib * MIB;
    memory->free = (g->total_mib > used ? g->total_mib - used : 0) * MIB;
    RETURN(NVML_SUCCESS);
}

/* ---- processes ---- */
static nvmlReturn_t processes(const char *fn, nvmlDevice_t device, unsigned int *count, void *infos, int v1) {
    nvmlReturn_t rc = enter(fn, device, 1);
    if (rc != NVML_SUCCESS) RETURN(rc);
    if (!count) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    unsigned int n = 0;
    for (unsigned int i = 0; i < S.nprocs; i++) n += S.procs[i].gpu == device->index;
    if (n == 0) {
        *count = 0;
        RETURN(NVML_SUCCESS);
    }
    if (!infos || *count < n) {
        *count = n;
        RETURN(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    unsigned int k = 0;
    for (unsigned int i = 0; i < S.nprocs; i++) {
        const struct proc *p = &S.procs[i];
        if (p->gpu != device->index) continue;
        if (v1) {
            nvmlProcessInfo_v1_t *out = (nvmlProcessInfo_v1_t *)infos + k;
            out->pid = p->pid;
            out->usedGpuMemory = p->used_mib * MIB;
        } else {
            nvmlProcessInfo_v2_t *out = (nvmlProcessInfo_v2_t *)infos + k;
            out->pid = p->pid;
            out->usedGpuMemory = p->used_mib * MIB;
            out->gpuInstanceId = NA_UINT;
            out->computeInstanceId = NA_UINT;
        }
        k++;
    }
    *count = n;
    RETURN(NVML_SUCCESS);
}
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *c, nvmlProcessInfo_v2_t *i) {
    return processes(__func__, d, c, i, 0);
}
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t d, unsigned int *c, nvmlProcessInfo_v2_t *i) {
    return processes(__func__, d, c, i, 0);
}
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t d, unsigned int *c, nvmlProcessInfo_v1_t *i) {
    return processes(__func__, d, c, i, 1);
}

/* ---- health ---- */
EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, unsigned int sensor, unsigned int *temp) {
    ENTER(device);
    if (!temp || sensor != 0) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *temp = G(device)->temp;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_v1_t *temperature) {
    ENTER(device);
    if (!temperature) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (temperature->version != nvmlTemperature_v1) RETURN(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    if (temperature->sensorType != 0) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    temperature->temperature = (int)G(device)->temp;
    RETURN(NVML_SUCCESS);
}

static nvmlReturn_t clocks_reasons(const char *fn, nvmlDevice_t device, unsigned long long *reasons) {
    nvmlReturn_t rc = enter(fn, device, 1);
    if (rc == NVML_SUCCESS) {
        if (reasons) *reasons = G(device)->clocks_reasons;
        else rc = NVML_ERROR_INVALID_ARGUMENT;
    }
    RETURN(rc);
}
EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device, unsigned long long *reasons) {
    return clocks_reasons(__func__, device, reasons);
}
EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device, unsigned long long *reasons) {
    return clocks_reasons(__func__, device, reasons);
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, unsigned int errorType, unsigned int counterType,
                                                unsigned long long *eccCounts) {
    ENTER(device);
    if (G(device)->ecc_notsupported) RETURN(NVML_ERROR_NOT_SUPPORTED);
    if (!eccCounts || errorType > 1 || counterType > 1) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    const struct gpu *g = G(device);
    if (counterType == 0) *eccCounts = errorType == 0 ? g->ecc_corrected : g->ecc_uncorrected; /* volatile */
    else *eccCounts = errorType == 0 ? g->ecc_corrected_agg : g->ecc_uncorrected_agg;         /* aggregate */
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corrRows, unsigned int *uncRows,
                                              unsigned int *isPending, unsigned int *failureOccurred) {
    ENTER(device);
    if (G(device)->ecc_notsupported) RETURN(NVML_ERROR_NOT_SUPPORTED);
    if (!corrRows || !uncRows || !isPending || !failureOccurred) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *corrRows = G(device)->rr_corr;
    *uncRows = G(device)->rr_unc;
    *isPending = G(device)->rr_pending;
    *failureOccurred = G(device)->rr_failure;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetRetiredPages(nvmlDevice_t device, unsigned int cause, unsigned int *pageCount,
                                              unsigned long long *addresses) {
    ENTER(device);
    if (G(device)->ecc_notsupported) RETURN(NVML_ERROR_NOT_SUPPORTED);
    if (!pageCount || cause > 1) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    unsigned int n = cause == 0 ? G(device)->retired_sbe : G(device)->retired_dbe;
    if (n == 0) {
        *pageCount = 0;
        RETURN(NVML_SUCCESS);
    }
    if (!addresses || *pageCount < n) {
        *pageCount = n;
        RETURN(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    for (unsigned int i = 0; i < n; i++) addresses[i] = 0x100000ull * (cause + 1) + 0x1000ull * i;
    *pageCount = n;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetRetiredPagesPendingStatus(nvmlDevice_t device, unsigned int *isPending) {
    ENTER(device);
    if (G(device)->ecc_notsupported) RETURN(NVML_ERROR_NOT_SUPPORTED);
    if (!isPending) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *isPending = G(device)->retired_pending ? 1 : 0; /* nvmlEnableState_t */
    RETURN(NVML_SUCCESS);
}

/* Thresholds as in nvmlTemperatureThresholds_t: 0 shutdown, 1 slowdown, 3 gpu max; others unsupported. */
EXPORT nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t device, unsigned int thresholdType,
                                                      unsigned int *temp) {
    ENTER(device);
    if (!temp) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    const struct gpu *g = G(device);
    unsigned int value = thresholdType == 0 ? g->temp_shutdown
                         : thresholdType == 1 ? g->temp_slowdown
                         : thresholdType == 3 ? g->temp_gpu_max
                                              : 0;
    if (thresholdType >= 8) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (value == 0) RETURN(NVML_ERROR_NOT_SUPPORTED);
    *temp = value;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPcieReplayCounter(nvmlDevice_t device, unsigned int *value) {
    ENTER(device);
    if (!value) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *value = G(device)->pcie_replays;
    RETURN(NVML_SUCCESS);
}

/* ---- events ---- */
EXPORT nvmlReturn_t nvmlEventSetCreate(struct event_set **set) {
    ENTER(NULL);
    if (!set) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *set = calloc(1, sizeof **set);
    RETURN(*set ? NVML_SUCCESS : NVML_ERROR_UNKNOWN);
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long eventTypes, struct event_set *set) {
    ENTER(device);
    if (!set) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    set->mask[device->index] |= eventTypes;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlEventSetFree(struct event_set *set) {
    ENTER(NULL);
    free(set);
    RETURN(NVML_SUCCESS);
}

/* Deliver the next undelivered Xid for a registered device, polling the file until timeoutms. */
static nvmlReturn_t wait_event(const char *fn, struct event_set *set, nvmlEventData_t *out, unsigned int timeoutms) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        nvmlReturn_t rc = enter(fn, NULL, 1);
        if (rc == NVML_SUCCESS && (!set || !out)) rc = NVML_ERROR_INVALID_ARGUMENT;
        if (rc != NVML_SUCCESS) RETURN(rc);
        unsigned int eligible = 0;
        for (unsigned int i = 0; i < S.nxids; i++) {
            const struct xid *x = &S.xids[i];
            if (x->gpu >= MAX_GPUS || !(set->mask[x->gpu] & EVENT_XID)) continue;
            if (eligible++ < set->delivered) continue;
            set->delivered++;
            handles[x->gpu].index = x->gpu;
            out->device = &handles[x->gpu];
            out->eventType = EVENT_XID;
            out->eventData = x->xid;
            out->gpuInstanceId = NA_UINT;
            out->computeInstanceId = NA_UINT;
            RETURN(NVML_SUCCESS);
        }
        pthread_mutex_unlock(&lock);
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long elapsed = (now.tv_sec - start.tv_sec) * 1000LL + (now.tv_nsec - start.tv_nsec) / 1000000LL;
        if (elapsed >= (long long)timeoutms) return NVML_ERROR_TIMEOUT;
        long long left = (long long)timeoutms - elapsed;
        sleep_ms(left < 10 ? (unsigned int)left : 10);
    }
}
EXPORT nvmlReturn_t nvmlEventSetWait_v2(struct event_set *set, nvmlEventData_t *data, unsigned int timeoutms) {
    return wait_event(__func__, set, data, timeoutms);
}
EXPORT nvmlReturn_t nvmlEventSetWait(struct event_set *set, nvmlEventData_v1_t *data, unsigned int timeoutms) {
    nvmlEventData_t full;
    nvmlReturn_t rc = wait_event(__func__, set, data ? &full : NULL, timeoutms);
    if (rc == NVML_SUCCESS) {
        data->device = full.device;
        data->eventType = full.eventType;
        data->eventData = full.eventData;
    }
    return rc;
}
