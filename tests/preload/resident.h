// tests/preload/resident.h: the process's resident set, for the preload programs that bound it
// (threads.cc's exiting threads, calloc.cc's sparse table). Entry point: resident_kib.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

// VmRSS in KiB, from /proc/self/statm; exits with status 1 if it cannot be read.
inline long resident_kib() {
    long pages = 0, resident = 0;
    FILE* f = std::fopen("/proc/self/statm", "r");
    if (f == nullptr || std::fscanf(f, "%ld %ld", &pages, &resident) != 2) std::exit(1);
    std::fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}
