/*
 * A line-oriented front end to the system libsrtp2, used by
 * dataplane/tests/srtp_libsrtp.rs as an independent implementation to check
 * rvoip against. Development only; never linked into rvoip.
 *
 *   oracle <suite> <key||salt hex> [mki-hex]
 *
 * stdin, one request per line:  <op> <packet hex>
 *   op: p (protect RTP), u (unprotect RTP), pc (protect RTCP), uc (unprotect RTCP)
 * stdout, one answer per line:  ok <packet hex>  |  err <libsrtp status>
 *
 *   oracle bench <suite> <key||salt hex> <packets>
 * protects, then unprotects, <packets> 172-octet RTP packets (160 octets of
 * payload, sequence numbers in order) and prints
 *   protect_ns=<ns per packet> unprotect_ns=<ns per packet>
 */
#include <srtp2/srtp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int set_policy(srtp_policy_t *p, const char *suite) {
    if (!strcmp(suite, "AES_CM_128_HMAC_SHA1_80")) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p->rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p->rtcp);
    } else if (!strcmp(suite, "AES_CM_128_HMAC_SHA1_32")) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&p->rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p->rtcp);
    } else if (!strcmp(suite, "AES_256_CM_HMAC_SHA1_80")) {
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&p->rtp);
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&p->rtcp);
    } else if (!strcmp(suite, "AES_256_CM_HMAC_SHA1_32")) {
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32(&p->rtp);
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&p->rtcp);
    } else if (!strcmp(suite, "AEAD_AES_128_GCM")) {
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&p->rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&p->rtcp);
    } else if (!strcmp(suite, "AEAD_AES_256_GCM")) {
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p->rtp);
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p->rtcp);
    } else {
        return -1;
    }
    return 0;
}

static int unhex(const char *s, unsigned char *out, int max) {
    int n = 0;
    while (s[0] && s[1] && s[0] != '\n' && n < max) {
        unsigned int b;
        if (sscanf(s, "%2x", &b) != 1) return -1;
        out[n++] = (unsigned char)b;
        s += 2;
    }
    return n;
}

static void puthex(const unsigned char *b, int n) {
    for (int i = 0; i < n; i++) printf("%02x", b[i]);
}

static srtp_t session(const char *suite, unsigned char *key, unsigned char *mki, int mki_len,
                      srtp_ssrc_type_t dir) {
    static srtp_master_key_t mk;
    static srtp_master_key_t *mks[1];
    srtp_policy_t p;
    memset(&p, 0, sizeof p);
    if (set_policy(&p, suite)) {
        fprintf(stderr, "unknown suite %s\n", suite);
        exit(2);
    }
    p.ssrc.type = dir;
    if (mki_len > 0) {
        mk.key = key;
        mk.mki_id = mki;
        mk.mki_size = (unsigned)mki_len;
        mks[0] = &mk;
        p.keys = mks;
        p.num_master_keys = 1;
    } else {
        p.key = key;
    }
    p.window_size = 128;
    srtp_t s;
    srtp_err_status_t st = srtp_create(&s, &p);
    if (st) {
        fprintf(stderr, "srtp_create: %d\n", st);
        exit(2);
    }
    return s;
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int bench(const char *suite, unsigned char *key, long n) {
    srtp_t tx = session(suite, key, NULL, 0, ssrc_any_outbound);
    srtp_t rx = session(suite, key, NULL, 0, ssrc_any_inbound);
    enum { LEN = 172, ROOM = LEN + SRTP_MAX_TRAILER_LEN };
    unsigned char *pkts = calloc((size_t)n, ROOM);
    int *lens = calloc((size_t)n, sizeof(int));
    if (!pkts || !lens) return 2;
    for (long i = 0; i < n; i++) {
        unsigned char *p = pkts + i * ROOM;
        p[0] = 0x80;
        p[1] = 0;
        p[2] = (unsigned char)(i >> 8);
        p[3] = (unsigned char)i;
        p[8] = 0x12; p[9] = 0x34; p[10] = 0x56; p[11] = 0x78;
        for (int k = 12; k < LEN; k++) p[k] = (unsigned char)(k ^ i);
        lens[i] = LEN;
    }
    double t0 = now_ns();
    for (long i = 0; i < n; i++)
        if (srtp_protect(tx, pkts + i * ROOM, &lens[i])) return 3;
    double t1 = now_ns();
    for (long i = 0; i < n; i++)
        if (srtp_unprotect(rx, pkts + i * ROOM, &lens[i])) return 4;
    double t2 = now_ns();
    printf("protect_ns=%.1f unprotect_ns=%.1f\n", (t1 - t0) / n, (t2 - t1) / n);
    return 0;
}

int main(int argc, char **argv) {
    unsigned char key[64], mki[8];
    if (srtp_init()) return 2;
    if (argc == 5 && !strcmp(argv[1], "bench")) {
        if (unhex(argv[3], key, sizeof key) <= 0) return 2;
        return bench(argv[2], key, atol(argv[4]));
    }
    if (argc < 3) {
        fprintf(stderr, "usage: oracle <suite> <key||salt hex> [mki hex]\n");
        return 2;
    }
    if (unhex(argv[2], key, sizeof key) <= 0) return 2;
    int mki_len = argc > 3 ? unhex(argv[3], mki, sizeof mki) : 0;
    srtp_t tx = session(argv[1], key, mki, mki_len, ssrc_any_outbound);
    srtp_t rx = session(argv[1], key, mki, mki_len, ssrc_any_inbound);
    static char line[8192];
    static unsigned char buf[4096];
    while (fgets(line, sizeof line, stdin)) {
        char op[4];
        char *sp = strchr(line, ' ');
        if (!sp || sp - line > 2) {
            printf("err parse\n");
            fflush(stdout);
            continue;
        }
        memcpy(op, line, (size_t)(sp - line));
        op[sp - line] = 0;
        int len = unhex(sp + 1, buf, 2048);
        srtp_err_status_t st;
        if (!strcmp(op, "p")) st = mki_len ? srtp_protect_mki(tx, buf, &len, 1, 0) : srtp_protect(tx, buf, &len);
        else if (!strcmp(op, "u")) st = mki_len ? srtp_unprotect_mki(rx, buf, &len, 1) : srtp_unprotect(rx, buf, &len);
        else if (!strcmp(op, "pc")) st = mki_len ? srtp_protect_rtcp_mki(tx, buf, &len, 1, 0) : srtp_protect_rtcp(tx, buf, &len);
        else st = mki_len ? srtp_unprotect_rtcp_mki(rx, buf, &len, 1) : srtp_unprotect_rtcp(rx, buf, &len);
        if (st) {
            printf("err %d\n", st);
        } else {
            printf("ok ");
            puthex(buf, len);
            printf("\n");
        }
        fflush(stdout);
    }
    return 0;
}
