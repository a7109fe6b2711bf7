/* A minimal Node-API bridge to libthaw (the C API), so that a stock `node` can checkpoint
 * itself: checkpoint(image, key, exitAfterSave) and args() (the arguments given to `thaw run`
 * after `--`). Built by the test suite:
 *   cc -shared -fPIC -I/usr/include/node -I sdk/include thaw_node.c -lthaw -o thaw.node     */
#include <node_api.h>
#include <stdio.h>

#include "thaw.h"

static napi_value checkpoint(napi_env env, napi_callback_info info) {
    size_t argc = 3;
    napi_value argv[3];
    char image[4096], key[4096];
    size_t n;
    bool exit_after_save = false;
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
    if (argc < 2 || napi_get_value_string_utf8(env, argv[0], image, sizeof image, &n) != napi_ok ||
        napi_get_value_string_utf8(env, argv[1], key, sizeof key, &n) != napi_ok) {
        napi_throw_type_error(env, NULL, "checkpoint(image, key, exitAfterSave)");
        return NULL;
    }
    if (argc > 2) napi_get_value_bool(env, argv[2], &exit_after_save);
    int r = thaw_checkpoint(image, key[0] ? key : NULL, exit_after_save ? THAW_EXIT_AFTER_SAVE : 0);
    if (r < 0) {
        napi_throw_error(env, NULL, thaw_last_error());
        return NULL;
    }
    napi_value out;
    napi_create_int32(env, r, &out);
    return out;
}

static napi_value args(napi_env env, napi_callback_info info) {
    (void)info;
    napi_value list;
    napi_create_array(env, &list);
    for (int i = 0; i < thaw_restored_argc(); i++) {
        napi_value s;
        napi_create_string_utf8(env, thaw_restored_arg(i), NAPI_AUTO_LENGTH, &s);
        napi_set_element(env, list, (uint32_t)i, s);
    }
    return list;
}

NAPI_MODULE_INIT() {
    napi_value fn;
    napi_create_function(env, "checkpoint", NAPI_AUTO_LENGTH, checkpoint, NULL, &fn);
    napi_set_named_property(env, exports, "checkpoint", fn);
    napi_create_function(env, "args", NAPI_AUTO_LENGTH, args, NULL, &fn);
    napi_set_named_property(env, exports, "args", fn);
    return exports;
}
