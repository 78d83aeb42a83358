#include "core/log.h"
int main(void) { return 0; }
