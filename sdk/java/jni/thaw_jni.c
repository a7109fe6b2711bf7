/* The JNI half of thaw.jar (dev.thaw.Thaw): calls libthaw.so and, after every restore, reseeds
 * the JDK's random generators that the first life seeded. JNI field access ignores the module
 * system's strong encapsulation, so no --add-opens is needed. Built by sdk/java/build.sh. */
#include <errno.h>
#include <jni.h>
#include <jvmti.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "thaw.h"

#define THAW_EXCEPTION "dev/thaw/ThawException"

/* A string from UTF-8 (libthaw's messages): NewStringUTF takes modified UTF-8, and turned a
 * character outside the BMP (in a path a message names) into others. */
static jstring utf8_string(JNIEnv *env, const char *s) {
    jsize len = (jsize)strlen(s);
    jbyteArray bytes = (*env)->NewByteArray(env, len);
    if (!bytes) return NULL;
    (*env)->SetByteArrayRegion(env, bytes, 0, len, (const jbyte *)s);
    jclass sc = (*env)->FindClass(env, "java/lang/String");
    jclass cs = (*env)->FindClass(env, "java/nio/charset/StandardCharsets");
    if (!sc || !cs) return NULL;
    jfieldID f = (*env)->GetStaticFieldID(env, cs, "UTF_8", "Ljava/nio/charset/Charset;");
    jobject utf8 = f ? (*env)->GetStaticObjectField(env, cs, f) : NULL;
    jmethodID ctor = (*env)->GetMethodID(env, sc, "<init>", "([BLjava/nio/charset/Charset;)V");
    if (!utf8 || !ctor) return NULL;
    return (jstring)(*env)->NewObject(env, sc, ctor, bytes, utf8);
}

static void throw_thaw(JNIEnv *env, const char *message, int code) {
    jclass cls = (*env)->FindClass(env, THAW_EXCEPTION);
    if (!cls) return;
    jmethodID ctor = (*env)->GetMethodID(env, cls, "<init>", "(Ljava/lang/String;I)V");
    if (!ctor) return;
    jstring msg = utf8_string(env, message ? message : "");
    if (!msg) return;
    jobject e = (*env)->NewObject(env, cls, ctor, msg, (jint)code);
    if (e) (*env)->Throw(env, (jthrowable)e);
}

/* Fresh bytes from the kernel, never from the (duplicated) memory of the process. */
static int64_t fresh64(void) {
    int64_t v = 0;
    size_t got = 0;
    while (got < sizeof v) {
        ssize_t n = getrandom((char *)&v + got, sizeof v - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        got += (size_t)n;
    }
    return v;
}

static jint fresh_nonzero32(void) {
    jint v;
    do v = (jint)fresh64(); while (v == 0);
    return v;
}

/* Clears a pending exception (a class or field missing from this JDK) and reports it. */
static int failed(JNIEnv *env) {
    if ((*env)->ExceptionCheck(env)) {
        (*env)->ExceptionClear(env);
        return 1;
    }
    return 0;
}

/* Sets the static AtomicLong `field` of `cls` to a fresh value; false if the JDK lacks it. */
static void reseed_atomic_long(JNIEnv *env, jclass cls, const char *field) {
    jfieldID f = (*env)->GetStaticFieldID(env, cls, field, "Ljava/util/concurrent/atomic/AtomicLong;");
    if (failed(env) || !f) return;
    jobject a = (*env)->GetStaticObjectField(env, cls, f);
    if (!a) return;
    jclass al = (*env)->GetObjectClass(env, a);
    jmethodID set = (*env)->GetMethodID(env, al, "set", "(J)V");
    if (!failed(env) && set) (*env)->CallVoidMethod(env, a, set, (jlong)fresh64());
    failed(env);
    (*env)->DeleteLocalRef(env, al);
    (*env)->DeleteLocalRef(env, a);
}

/* Calls setSeed on the java.util.Random held in static `field` of `cls`, if any. */
static void reseed_random_field(JNIEnv *env, jclass cls, const char *field) {
    jfieldID f = (*env)->GetStaticFieldID(env, cls, field, "Ljava/util/Random;");
    if (failed(env) || !f) return;
    jobject r = (*env)->GetStaticObjectField(env, cls, f);
    if (!r) return;
    jclass rc = (*env)->FindClass(env, "java/util/Random");
    jmethodID set_seed = rc ? (*env)->GetMethodID(env, rc, "setSeed", "(J)V") : NULL;
    if (!failed(env) && set_seed) (*env)->CallVoidMethod(env, r, set_seed, (jlong)fresh64());
    failed(env);
    (*env)->DeleteLocalRef(env, r);
}

/* ThreadLocalRandom keeps its state in each Thread: a thread that used it in the first life
 * (probe set) gets a fresh seed, and a fresh secondary seed if it had one. */
static void reseed_threads(JNIEnv *env, jclass thaw_cls) {
    jclass tc = (*env)->FindClass(env, "java/lang/Thread");
    if (failed(env) || !tc) return;
    jfieldID seed = (*env)->GetFieldID(env, tc, "threadLocalRandomSeed", "J");
    jfieldID probe = seed ? (*env)->GetFieldID(env, tc, "threadLocalRandomProbe", "I") : NULL;
    jfieldID second = probe ? (*env)->GetFieldID(env, tc, "threadLocalRandomSecondarySeed", "I") : NULL;
    if (failed(env) || !second) return;
    jmethodID live = (*env)->GetStaticMethodID(env, thaw_cls, "liveThreads", "()[Ljava/lang/Thread;");
    if (failed(env) || !live) return;
    jobjectArray threads = (jobjectArray)(*env)->CallStaticObjectMethod(env, thaw_cls, live);
    if (failed(env) || !threads) return;
    jsize n = (*env)->GetArrayLength(env, threads);
    for (jsize i = 0; i < n; i++) {
        jobject t = (*env)->GetObjectArrayElement(env, threads, i);
        if (!t) continue;
        if ((*env)->GetIntField(env, t, probe) != 0) {
            (*env)->SetLongField(env, t, seed, (jlong)fresh64());
            (*env)->SetIntField(env, t, probe, fresh_nonzero32());
        }
        if ((*env)->GetIntField(env, t, second) != 0)
            (*env)->SetIntField(env, t, second, fresh_nonzero32());
        (*env)->DeleteLocalRef(env, t);
    }
    (*env)->DeleteLocalRef(env, threads);
}

/* Classes whose static state seeds generators: each reseeded only if initialized. */
struct seeded {
    const char *name;
    void (*reseed)(JNIEnv *, jclass);
};

static void math_random(JNIEnv *env, jclass c) { reseed_random_field(env, c, "randomNumberGenerator"); }
static void random_uniquifier(JNIEnv *env, jclass c) { reseed_atomic_long(env, c, "seedUniquifier"); }
static void default_gen(JNIEnv *env, jclass c) { reseed_atomic_long(env, c, "defaultGen"); }
static void collections_r(JNIEnv *env, jclass c) { reseed_random_field(env, c, "r"); }
static void random_field(JNIEnv *env, jclass c) { reseed_random_field(env, c, "random"); }
static void tlr_seeder(JNIEnv *env, jclass c) {
    reseed_atomic_long(env, c, "seeder");
    jfieldID f = (*env)->GetStaticFieldID(env, c, "probeGenerator", "Ljava/util/concurrent/atomic/AtomicInteger;");
    if (failed(env) || !f) return;
    jobject a = (*env)->GetStaticObjectField(env, c, f);
    if (!a) return;
    jclass ac = (*env)->GetObjectClass(env, a);
    jmethodID set = (*env)->GetMethodID(env, ac, "set", "(I)V");
    if (!failed(env) && set) (*env)->CallVoidMethod(env, a, set, fresh_nonzero32());
    failed(env);
}

/* NativePRNG (behind new SecureRandom(), UUID.randomUUID()) reads /dev/urandom through one
 * RandomIO per variant, which keeps what it read for up to 100 ms of wall-clock time, and mixes
 * it with a SHA1PRNG seeded once: a restore within 100 ms of the checkpoint (or on a machine
 * whose clock is behind) would return the first life's bytes. Emptied, and its mixing
 * generator dropped (made again, freshly seeded, on first use). */
static void native_prng(JNIEnv *env, jclass c) {
    jfieldID f = (*env)->GetStaticFieldID(env, c, "INSTANCE", "Lsun/security/provider/NativePRNG$RandomIO;");
    if (failed(env) || !f) return;
    jobject io = (*env)->GetStaticObjectField(env, c, f);
    if (!io) return;
    jclass ic = (*env)->GetObjectClass(env, io);
    jfieldID buffered = (*env)->GetFieldID(env, ic, "buffered", "I");
    jfieldID last = buffered ? (*env)->GetFieldID(env, ic, "lastRead", "J") : NULL;
    jfieldID mix = last ? (*env)->GetFieldID(env, ic, "mixRandom", "Lsun/security/provider/SecureRandom;") : NULL;
    if (!failed(env) && mix) {
        (*env)->SetIntField(env, io, buffered, 0);
        (*env)->SetLongField(env, io, last, 0);
        (*env)->SetObjectField(env, io, mix, NULL);
    }
    failed(env);
    (*env)->DeleteLocalRef(env, ic);
    (*env)->DeleteLocalRef(env, io);
}

/* 32 fresh bytes as a Java byte[] (NULL, an exception pending, if it cannot be made). */
static jbyteArray fresh_bytes(JNIEnv *env) {
    jbyte b[32];
    for (size_t i = 0; i < sizeof b; i += sizeof(int64_t)) {
        int64_t v = fresh64();
        memcpy(b + i, &v, sizeof v);
    }
    jbyteArray a = (*env)->NewByteArray(env, (jsize)sizeof b);
    if (a) (*env)->SetByteArrayRegion(env, a, 0, (jsize)sizeof b, b);
    return a;
}

/* engineSetSeed(fresh bytes) on a SecureRandomSpi of the JDK's own: a DRBG (AbstractDrbg or the
 * DRBG that wraps one) takes them as the entropy input of a reseed, a SHA1PRNG mixes them into
 * its state. */
static void set_seed_with(JNIEnv *env, jobject spi, jmethodID set_seed) {
    jbyteArray b = (!failed(env) && set_seed) ? fresh_bytes(env) : NULL;
    if (!failed(env) && b) (*env)->CallVoidMethod(env, spi, set_seed, b);
    failed(env);
}

static void set_seed_spi(JNIEnv *env, jobject spi) {
    jclass c = (*env)->GetObjectClass(env, spi);
    set_seed_with(env, spi, c ? (*env)->GetMethodID(env, c, "engineSetSeed", "([B)V") : NULL);
}

/* DRBG and SHA1PRNG instances made with the default constructor draw their seed from a static
 * seeder generator, seeded once from the system's entropy at its first use: seeded in the first
 * life, it gave every restore the same seeds, and so the same output to a SecureRandom made
 * after the restore (SecureRandom.getInstance("DRBG") or "SHA1PRNG"; new SecureRandom() and
 * UUID.randomUUID() where DRBG is the default, as -Djava.security.egd=file:/dev/./urandom makes
 * it). The DRBG's seeder is an EntropySource lambda over a HashDrbg (its captured arg$1). */
static void drbg_seeder(JNIEnv *env, jclass c) {
    jfieldID f = (*env)->GetStaticFieldID(env, c, "seeder", "Lsun/security/provider/EntropySource;");
    if (failed(env) || !f) return;
    jobject es = (*env)->GetStaticObjectField(env, c, f);
    if (!es) return;
    jclass lc = (*env)->GetObjectClass(env, es);
    jfieldID arg = lc ? (*env)->GetFieldID(env, lc, "arg$1", "Lsun/security/provider/HashDrbg;") : NULL;
    jobject drbg = (!failed(env) && arg) ? (*env)->GetObjectField(env, es, arg) : NULL;
    if (!failed(env) && drbg) set_seed_spi(env, drbg);
}

static void sha1_seeder(JNIEnv *env, jclass c) {
    jfieldID f = (*env)->GetStaticFieldID(env, c, "seeder", "Lsun/security/provider/SecureRandom;");
    if (failed(env) || !f) return;
    jobject seeder = (*env)->GetStaticObjectField(env, c, f);
    if (seeder) set_seed_spi(env, seeder);
}

/* A java.security.SecureRandom the JDK keeps in static `field` of `cls`, if it is a DRBG or a
 * SHA1PRNG (seeded in the first life, it repeats its sequence in every restore; a NativePRNG
 * reads the kernel's and is emptied above): fresh bytes mixed in with setSeed. */
static void reseed_secure_random_field(JNIEnv *env, jclass cls, const char *field) {
    jfieldID f = (*env)->GetStaticFieldID(env, cls, field, "Ljava/security/SecureRandom;");
    if (failed(env) || !f) return;
    jobject r = (*env)->GetStaticObjectField(env, cls, f);
    if (!r) return;
    jclass rc = (*env)->GetObjectClass(env, r);
    jmethodID alg = rc ? (*env)->GetMethodID(env, rc, "getAlgorithm", "()Ljava/lang/String;") : NULL;
    jmethodID set_seed = alg ? (*env)->GetMethodID(env, rc, "setSeed", "([B)V") : NULL;
    jstring name = (!failed(env) && set_seed) ? (jstring)(*env)->CallObjectMethod(env, r, alg) : NULL;
    const char *s = (!failed(env) && name) ? (*env)->GetStringUTFChars(env, name, NULL) : NULL;
    if (!s) {
        failed(env);
        return;
    }
    int ours = strcmp(s, "DRBG") == 0 || strcmp(s, "SHA1PRNG") == 0;
    (*env)->ReleaseStringUTFChars(env, name, s);
    jbyteArray b = ours ? fresh_bytes(env) : NULL;
    if (!failed(env) && b) (*env)->CallVoidMethod(env, r, set_seed, b);
    failed(env);
}

#define HOLDER(fn, field) \
    static void fn(JNIEnv *env, jclass c) { reseed_secure_random_field(env, c, field); }
HOLDER(uuid_holder, "numberGenerator")
HOLDER(jca_default, "def")
HOLDER(jca_cached, "instance")
HOLDER(sunjce_holder, "RANDOM")
HOLDER(seed_generator, "seedGenerator")
HOLDER(static_random, "random")
HOLDER(rmi_objid, "secureRandom")
HOLDER(krb5_confounder, "srand")

static const struct seeded SEEDED[] = {
    /* The seeders first: a reseeded DRBG below draws from the DRBG seeder. */
    {"sun.security.provider.AbstractDrbg$SeederHolder", drbg_seeder},
    {"sun.security.provider.SecureRandom$SeederHolder", sha1_seeder},
    /* Every static SecureRandom of the JDK's modules (java.base, java.net.http, java.rmi,
     * java.security.jgss, jdk.naming.dns): UUIDs, keys and IVs, getSeed(), temporary file names,
     * WebSocket keys, RMI object ids, Kerberos confounders, DNS query ids. */
    {"java.util.UUID$Holder", uuid_holder},
    {"sun.security.jca.JCAUtil", jca_default},
    {"sun.security.jca.JCAUtil$CachedSecureRandomHolder", jca_cached},
    {"com.sun.crypto.provider.SunJCE$SecureRandomHolder", sunjce_holder},
    {"java.security.SecureRandom", seed_generator},
    {"java.io.File$TempDirectory", static_random},
    {"java.nio.file.TempFileHelper", static_random},
    {"jdk.internal.net.http.websocket.OpeningHandshake", static_random},
    {"com.sun.jndi.dns.DnsClient", static_random},
    {"java.rmi.server.ObjID", rmi_objid},
    {"sun.security.krb5.Confounder", krb5_confounder},
    {"sun.security.provider.NativePRNG", native_prng},
    {"sun.security.provider.NativePRNG$Blocking", native_prng},
    {"sun.security.provider.NativePRNG$NonBlocking", native_prng},
    {"java.lang.Math$RandomNumberGeneratorHolder", math_random},
    {"java.lang.StrictMath$RandomNumberGeneratorHolder", math_random},
    {"java.util.Random", random_uniquifier},
    {"java.util.concurrent.ThreadLocalRandom", tlr_seeder},
    {"java.util.SplittableRandom", default_gen},
    {"java.util.Collections", collections_r},
    /* The JDK's other static java.util.Random: HTTP digest authentication's client nonces,
     * the choice among DNS SRV records (LDAP, Kerberos). */
    {"sun.net.www.protocol.http.DigestAuthentication$Parameters", random_field},
    {"com.sun.jndi.ldap.ServiceLocator", random_field},
    {"sun.security.krb5.KrbServiceLocator", random_field},
    {"jdk.random.L32X64MixRandom", default_gen},
    {"jdk.random.L64X128MixRandom", default_gen},
    {"jdk.random.L64X128StarStarRandom", default_gen},
    {"jdk.random.L64X256MixRandom", default_gen},
    {"jdk.random.L64X1024MixRandom", default_gen},
    {"jdk.random.L128X128MixRandom", default_gen},
    {"jdk.random.L128X256MixRandom", default_gen},
    {"jdk.random.L128X1024MixRandom", default_gen},
    {"jdk.random.Xoroshiro128PlusPlus", default_gen},
    {"jdk.random.Xoshiro256PlusPlus", default_gen},
};

#define NSEEDED (sizeof SEEDED / sizeof SEEDED[0])

/* The JDK's seeded SecureRandom engines: every DRBG (sun.security.provider.DRBG, the engine a
 * java.security.SecureRandom wraps, around an AbstractDrbg: HashDrbg, HmacDrbg or CtrDrbg) and
 * every SHA1PRNG. One made and used in the first life repeats its sequence in every restore,
 * wherever it is kept: an application's field, a TLS SSLContext's (its ClientHello randoms and
 * key shares), a session-id generator's pool. They are found by one walk of the heap before the
 * checkpoint and reseeded after every restore through weak references: nothing but them is
 * touched then. Neither class initialized, there is none and no walk. */
static const char *const GENERATORS[] = {
    "sun.security.provider.DRBG",
    "sun.security.provider.SecureRandom",
};
#define NGENERATORS (sizeof GENERATORS / sizeof GENERATORS[0])

/* Looked up in the first life, before the checkpoint: finding a class loads it, and class
 * loading after a restore is time on the restored process's critical path (the jdk.random
 * classes alone took about 15 ms here). Loading is not initialization: a class first initialized
 * after the restore seeds itself then, afresh. */
static struct {
    int ready;
    jobject unsafe;
    jmethodID should_init;
    jclass seeded[NSEEDED];
    jclass generators[NGENERATORS];
    jclass spi;               /* java.security.SecureRandomSpi, what the walk reports */
    jclass drbg_engine;       /* sun.security.provider.DRBG */
    jfieldID drbg_impl;       /* its AbstractDrbg */
    jclass drbg;              /* sun.security.provider.AbstractDrbg */
    jfieldID drbg_ready;      /* its `instantiated`: false until its first use */
    jmethodID drbg_set_seed;  /* its engineSetSeed: a reseed with the input as entropy */
    jclass sha1prng;          /* sun.security.provider.SecureRandom */
    jfieldID sha1prng_state;  /* its `state`: null until seeded */
    jmethodID sha1prng_set_seed;
} cache;

/* The generators found before the latest checkpoint (weak: they may be collected since). */
static jweak *found;
static size_t nfound;

static void prepare_locked(JNIEnv *env) {
    if (cache.ready) return;
    if ((*env)->PushLocalFrame(env, 64) != 0) {
        failed(env);
        return;
    }
    /* jdk.internal.misc.Unsafe.shouldBeInitialized tells an initialized class without
     * initializing it; Class.forName(name, false, loader) finds a class without initializing it. */
    jclass uc = (*env)->FindClass(env, "jdk/internal/misc/Unsafe");
    jfieldID tu = uc ? (*env)->GetStaticFieldID(env, uc, "theUnsafe", "Ljdk/internal/misc/Unsafe;") : NULL;
    jobject unsafe = tu ? (*env)->GetStaticObjectField(env, uc, tu) : NULL;
    jmethodID should_init = unsafe ? (*env)->GetMethodID(env, uc, "shouldBeInitialized", "(Ljava/lang/Class;)Z") : NULL;
    jclass class_cls = (*env)->FindClass(env, "java/lang/Class");
    jmethodID for_name = class_cls ? (*env)->GetStaticMethodID(env, class_cls, "forName",
        "(Ljava/lang/String;ZLjava/lang/ClassLoader;)Ljava/lang/Class;") : NULL;
    jclass cl = (*env)->FindClass(env, "java/lang/ClassLoader");
    jmethodID system = cl ? (*env)->GetStaticMethodID(env, cl, "getSystemClassLoader", "()Ljava/lang/ClassLoader;") : NULL;
    jobject loader = system ? (*env)->CallStaticObjectMethod(env, cl, system) : NULL;
    if (failed(env) || !should_init || !for_name) {
        (*env)->PopLocalFrame(env, NULL);
        return;
    }
    cache.unsafe = (*env)->NewGlobalRef(env, unsafe);
    cache.should_init = should_init;
    for (size_t i = 0; i < NSEEDED; i++) {
        jstring name = (*env)->NewStringUTF(env, SEEDED[i].name);
        jclass c = name ? (jclass)(*env)->CallStaticObjectMethod(env, class_cls, for_name, name, JNI_FALSE, loader) : NULL;
        if (failed(env) || !c) continue;
        cache.seeded[i] = (jclass)(*env)->NewGlobalRef(env, c);
    }
    for (size_t i = 0; i < NGENERATORS; i++) {
        jstring name = (*env)->NewStringUTF(env, GENERATORS[i]);
        jclass c = name ? (jclass)(*env)->CallStaticObjectMethod(env, class_cls, for_name, name, JNI_FALSE, loader) : NULL;
        if (failed(env) || !c) continue;
        cache.generators[i] = (jclass)(*env)->NewGlobalRef(env, c);
    }
    jclass spi = (*env)->FindClass(env, "java/security/SecureRandomSpi");
    jclass engine = spi ? (*env)->FindClass(env, "sun/security/provider/DRBG") : NULL;
    jfieldID impl = engine ? (*env)->GetFieldID(env, engine, "impl", "Lsun/security/provider/AbstractDrbg;") : NULL;
    if (!failed(env) && impl) {
        cache.spi = (jclass)(*env)->NewGlobalRef(env, spi);
        cache.drbg_engine = (jclass)(*env)->NewGlobalRef(env, engine);
        cache.drbg_impl = impl;
    }
    jclass drbg = (*env)->FindClass(env, "sun/security/provider/AbstractDrbg");
    jfieldID ready = drbg ? (*env)->GetFieldID(env, drbg, "instantiated", "Z") : NULL;
    jmethodID drbg_set_seed = ready ? (*env)->GetMethodID(env, drbg, "engineSetSeed", "([B)V") : NULL;
    if (!failed(env) && drbg_set_seed) {
        cache.drbg = (jclass)(*env)->NewGlobalRef(env, drbg);
        cache.drbg_ready = ready;
        cache.drbg_set_seed = drbg_set_seed;
    }
    jclass sha1 = (*env)->FindClass(env, "sun/security/provider/SecureRandom");
    jfieldID state = sha1 ? (*env)->GetFieldID(env, sha1, "state", "[B") : NULL;
    jmethodID sha1_set_seed = state ? (*env)->GetMethodID(env, sha1, "engineSetSeed", "([B)V") : NULL;
    if (!failed(env) && sha1_set_seed) {
        cache.sha1prng = (jclass)(*env)->NewGlobalRef(env, sha1);
        cache.sha1prng_state = state;
        cache.sha1prng_set_seed = sha1_set_seed;
    }
    /* What reseed_threads and reseed_random_field use. */
    (*env)->FindClass(env, "java/lang/Thread");
    (*env)->FindClass(env, "java/util/Random");
    failed(env);
    cache.ready = 1;
    (*env)->PopLocalFrame(env, NULL);
}

/* Any thread may checkpoint or reseed: the cache is filled once, under a lock. */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static void prepare(JNIEnv *env) {
    pthread_mutex_lock(&cache_lock);
    prepare_locked(env);
    pthread_mutex_unlock(&cache_lock);
}

#define GENERATOR_TAG 1

static jvmtiIterationControl JNICALL tag_engine(jlong class_tag, jlong size, jlong *tag_ptr, void *data) {
    (void)class_tag;
    (void)size;
    (void)data;
    *tag_ptr = GENERATOR_TAG;
    return JVMTI_ITERATION_CONTINUE;
}

/* Before the checkpoint: every DRBG and SHA1PRNG engine in the heap, in one walk (JVMTI's
 * IterateOverInstancesOfClass over SecureRandomSpi: a subclass test per object in the VM, a call
 * per engine), kept as weak references (a DRBG's as its AbstractDrbg). Without JVMTI (a JVM
 * built without it) only the JDK's own static generators are reseeded. */
static void find_generators_locked(JNIEnv *env) {
    for (size_t i = 0; i < nfound; i++) (*env)->DeleteWeakGlobalRef(env, found[i]);
    free(found);
    found = NULL;
    nfound = 0;
    if (!cache.spi || !cache.drbg || !cache.sha1prng) return;
    int any = 0;
    for (size_t i = 0; i < NGENERATORS; i++) {
        jclass c = cache.generators[i];
        if (!c) continue;
        jboolean pending = (*env)->CallBooleanMethod(env, cache.unsafe, cache.should_init, c);
        if (!failed(env) && !pending) any = 1;
    }
    JavaVM *vm;
    jvmtiEnv *ti;
    if (!any || (*env)->GetJavaVM(env, &vm) != JNI_OK || (*vm)->GetEnv(vm, (void **)&ti, JVMTI_VERSION_1_2) != JNI_OK)
        return;
    jvmtiCapabilities caps;
    memset(&caps, 0, sizeof caps);
    caps.can_tag_objects = 1;
    jlong tag = GENERATOR_TAG;
    jint count = 0;
    jobject *objects = NULL;
    if ((*ti)->AddCapabilities(ti, &caps) == JVMTI_ERROR_NONE &&
        (*ti)->IterateOverInstancesOfClass(ti, cache.spi, JVMTI_HEAP_OBJECT_EITHER, tag_engine, NULL) ==
            JVMTI_ERROR_NONE &&
        (*ti)->GetObjectsWithTags(ti, 1, &tag, &count, &objects, NULL) == JVMTI_ERROR_NONE && count > 0)
        found = calloc((size_t)count, sizeof *found);
    for (jint i = 0; i < count; i++) {
        jobject g = objects[i];
        if ((*env)->IsInstanceOf(env, g, cache.drbg_engine)) {
            jobject impl = (*env)->GetObjectField(env, g, cache.drbg_impl);
            (*env)->DeleteLocalRef(env, g);
            g = impl;
        } else if (!(*env)->IsInstanceOf(env, g, cache.sha1prng)) {
            (*env)->DeleteLocalRef(env, g);
            g = NULL;
        }
        jweak w = (found && g) ? (*env)->NewWeakGlobalRef(env, g) : NULL;
        if (w) found[nfound++] = w;
        if (g) (*env)->DeleteLocalRef(env, g);
    }
    if (objects) (*ti)->Deallocate(ti, (unsigned char *)objects);
    failed(env);
    /* Its tags (and their table) go with it. */
    (*ti)->DisposeEnvironment(ti);
}

static void find_generators(JNIEnv *env) {
    pthread_mutex_lock(&cache_lock);
    if (cache.ready) find_generators_locked(env);
    pthread_mutex_unlock(&cache_lock);
}

/* After a restore: fresh bytes into each generator found before the checkpoint that is still
 * alive and was seeded (one never used seeds itself at its first use, from the reseeded seeders,
 * or from what the application gives its setSeed: a SHA1PRNG seeded explicitly then gives that
 * seed's sequence, as it would without a checkpoint). */
static void reseed_generators(JNIEnv *env) {
    pthread_mutex_lock(&cache_lock);
    for (size_t i = 0; i < nfound; i++) {
        if ((*env)->PushLocalFrame(env, 8) != 0) break;
        /* Null once collected. */
        jobject g = (*env)->NewLocalRef(env, found[i]);
        jmethodID set_seed = NULL;
        if (g && (*env)->IsInstanceOf(env, g, cache.drbg)) {
            if ((*env)->GetBooleanField(env, g, cache.drbg_ready)) set_seed = cache.drbg_set_seed;
        } else if (g && (*env)->GetObjectField(env, g, cache.sha1prng_state)) {
            set_seed = cache.sha1prng_set_seed;
        }
        set_seed_with(env, g, set_seed);
        (*env)->PopLocalFrame(env, NULL);
    }
    pthread_mutex_unlock(&cache_lock);
}

static void reseed(JNIEnv *env, jclass thaw_cls) {
    prepare(env);
    if (!cache.ready || (*env)->PushLocalFrame(env, 64) != 0) {
        failed(env);
        return;
    }
    for (size_t i = 0; i < NSEEDED; i++) {
        jclass c = cache.seeded[i];
        if (!c) continue;
        jboolean pending = (*env)->CallBooleanMethod(env, cache.unsafe, cache.should_init, c);
        if (failed(env) || pending) continue;
        SEEDED[i].reseed(env, c);
        failed(env);
    }
    reseed_threads(env, thaw_cls);
    (*env)->PopLocalFrame(env, NULL);
    reseed_generators(env);
}

/* The bytes of a Java byte[] as a NUL-terminated string (malloc'd), or NULL (an exception is
 * pending). */
static char *cstring(JNIEnv *env, jbyteArray a) {
    jsize n = (*env)->GetArrayLength(env, a);
    char *s = malloc((size_t)n + 1);
    if (!s) {
        jclass oom = (*env)->FindClass(env, "java/lang/OutOfMemoryError");
        if (oom) (*env)->ThrowNew(env, oom, "thaw: path");
        return NULL;
    }
    (*env)->GetByteArrayRegion(env, a, 0, n, (jbyte *)s);
    s[n] = 0;
    return s;
}

/* image and key: the paths encoded as the JDK encodes file names (see Thaw.pathBytes). */
JNIEXPORT jint JNICALL Java_dev_thaw_Thaw_checkpoint0(JNIEnv *env, jclass cls, jbyteArray image,
                                                      jbyteArray key, jint flags) {
    char *img = cstring(env, image);
    if (!img) return -1;
    char *k = key ? cstring(env, key) : NULL;
    if (key && !k) {
        free(img);
        return -1;
    }
    prepare(env);
    find_generators(env);
    /* Free heap pages glibc still holds (the JVM's native allocations of the warm-up, the walk's
     * table of tags) stay out of the image. */
    malloc_trim(0);
    int r = thaw_checkpoint(img, k, (unsigned)flags);
    /* Copied before any other thaw_ call (the message is valid until then). */
    char message[16384];
    if (r < 0) {
        const char *m = thaw_last_error();
        snprintf(message, sizeof message, "%s", m ? m : "");
    }
    free(img);
    free(k);
    if (r < 0) {
        throw_thaw(env, message, r);
        return r;
    }
    if (r == THAW_RESTORED) reseed(env, cls);
    return r;
}

static jobjectArray strings(JNIEnv *env, int n, const char *(*get)(int)) {
    jclass sc = (*env)->FindClass(env, "java/lang/String");
    if (!sc) return NULL;
    if (n < 0) n = 0;
    jobjectArray a = (*env)->NewObjectArray(env, n, sc, NULL);
    for (int i = 0; a && i < n; i++) {
        const char *v = get(i);
        /* Modified UTF-8 and arbitrary bytes: go through a byte array and the platform charset. */
        size_t len = v ? strlen(v) : 0;
        jbyteArray bytes = (*env)->NewByteArray(env, (jsize)len);
        if (!bytes) return NULL;
        (*env)->SetByteArrayRegion(env, bytes, 0, (jsize)len, (const jbyte *)v);
        jmethodID ctor = (*env)->GetMethodID(env, sc, "<init>", "([B)V");
        jobject s = (*env)->NewObject(env, sc, ctor, bytes);
        if (!s) return NULL;
        (*env)->SetObjectArrayElement(env, a, i, s);
        (*env)->DeleteLocalRef(env, s);
        (*env)->DeleteLocalRef(env, bytes);
    }
    return a;
}

JNIEXPORT jobjectArray JNICALL Java_dev_thaw_Thaw_restoredArgs0(JNIEnv *env, jclass cls) {
    (void)cls;
    return strings(env, thaw_restored_argc(), thaw_restored_arg);
}

JNIEXPORT jobjectArray JNICALL Java_dev_thaw_Thaw_restoredEnv0(JNIEnv *env, jclass cls) {
    (void)cls;
    return strings(env, thaw_restored_envc(), thaw_restored_env);
}

JNIEXPORT void JNICALL Java_dev_thaw_Thaw_setFdPolicy0(JNIEnv *env, jclass cls, jstring spec) {
    (void)cls;
    const char *s = spec ? (*env)->GetStringUTFChars(env, spec, NULL) : NULL;
    if (spec && !s) return;
    int r = thaw_set_fd_policy(s);
    char message[4096];
    const char *why = r < 0 ? thaw_last_error() : NULL;
    if (r < 0) snprintf(message, sizeof message, "%s", why ? why : "");
    if (s) (*env)->ReleaseStringUTFChars(env, spec, s);
    if (r < 0) throw_thaw(env, message, r);
}

JNIEXPORT void JNICALL Java_dev_thaw_Thaw_reseed0(JNIEnv *env, jclass cls) { reseed(env, cls); }

JNIEXPORT void JNICALL Java_dev_thaw_Thaw_holdSignals0(JNIEnv *env, jclass cls) {
    (void)env;
    (void)cls;
    thaw_hold_signals();
}

JNIEXPORT void JNICALL Java_dev_thaw_Thaw_releaseSignals0(JNIEnv *env, jclass cls) {
    (void)env;
    (void)cls;
    thaw_release_signals();
}
