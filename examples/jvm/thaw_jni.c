/* A minimal JNI bridge to libthaw.so for the JVM end-to-end test: Warm.checkpoint(image, key)
 * returns thaw_checkpoint's result; Warm.lastError() its message. */
#include <jni.h>

#include "thaw.h"

JNIEXPORT jint JNICALL Java_Warm_checkpoint(JNIEnv *env, jclass cls, jstring image, jstring key) {
    (void)cls;
    const char *img = (*env)->GetStringUTFChars(env, image, NULL);
    const char *k = (*env)->GetStringUTFChars(env, key, NULL);
    int r = thaw_checkpoint(img, k, THAW_EXIT_AFTER_SAVE);
    (*env)->ReleaseStringUTFChars(env, image, img);
    (*env)->ReleaseStringUTFChars(env, key, k);
    return r;
}

JNIEXPORT jstring JNICALL Java_Warm_lastError(JNIEnv *env, jclass cls) {
    (void)cls;
    return (*env)->NewStringUTF(env, thaw_last_error());
}
