/*
 * The smallest C surface the SRTP benchmark needs from the system libsrtp2:
 * create a session for a suite and key, protect, unprotect. Compiled by
 * benches/build.rs only when pkg-config finds libsrtp2.
 */
#include <srtp2/srtp.h>
#include <string.h>

void *rvoip_bench_srtp_create(const char *suite, const unsigned char *key, int outbound) {
    static int initialised;
    if (!initialised) {
        if (srtp_init()) return 0;
        initialised = 1;
    }
    srtp_policy_t p;
    memset(&p, 0, sizeof p);
    if (!strcmp(suite, "AES_CM_128_HMAC_SHA1_80")) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p.rtp);
    } else if (!strcmp(suite, "AES_CM_128_HMAC_SHA1_32")) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&p.rtp);
    } else if (!strcmp(suite, "AES_256_CM_HMAC_SHA1_80")) {
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&p.rtp);
    } else if (!strcmp(suite, "AES_256_CM_HMAC_SHA1_32")) {
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32(&p.rtp);
    } else if (!strcmp(suite, "AEAD_AES_128_GCM")) {
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&p.rtp);
    } else if (!strcmp(suite, "AEAD_AES_256_GCM")) {
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p.rtp);
    } else {
        return 0;
    }
    p.rtcp = p.rtp;
    p.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
    p.key = (unsigned char *)key;
    p.window_size = 128;
    srtp_t s;
    if (srtp_create(&s, &p)) return 0;
    return s;
}

int rvoip_bench_srtp_protect(void *s, unsigned char *pkt, int *len) {
    return srtp_protect((srtp_t)s, pkt, len);
}

int rvoip_bench_srtp_unprotect(void *s, unsigned char *pkt, int *len) {
    return srtp_unprotect((srtp_t)s, pkt, len);
}
