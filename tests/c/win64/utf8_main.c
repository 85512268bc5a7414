/* Win64: a program's arguments as UTF-8, the encoding the C core takes paths in. The narrow argv of
 * main() is in the ANSI code page, which cannot hold every name, so this wmain (linked with -municode)
 * converts the wide command line and calls the program's main, compiled as eg_main (-Dmain=eg_main). */
#include <stdlib.h>
#include <windows.h>

int eg_main(int argc, char **argv);

int wmain(int argc, wchar_t **wargv) {
    char **argv = calloc((size_t)argc + 1, sizeof *argv);
    if (!argv) return 2;
    for (int i = 0; i < argc; i++) {
        const int n = WideCharToMultiByte(CP_UTF8, 0, wargv[i], -1, NULL, 0, NULL, NULL);
        if (n <= 0 || !(argv[i] = malloc((size_t)n))) return 2;
        WideCharToMultiByte(CP_UTF8, 0, wargv[i], -1, argv[i], n, NULL, NULL);
    }
    return eg_main(argc, argv);
}
