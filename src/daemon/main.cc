#include "s2smux_version.h"
#include <cstdio>
int main() { std::puts("s2smuxd " S2SMUX_VERSION); return 0; }
