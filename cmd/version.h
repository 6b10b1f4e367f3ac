/* The one place the dcgate version lives. VERSION_CONSUL is the Consul API level dcgate speaks. */
#ifndef DG_VERSION_H
#define DG_VERSION_H
#define DG_VERSION        "0.1.0"
#define DG_CONSUL_VERSION "1.17.0"
#endif
