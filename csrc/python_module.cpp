// Makes wmfast._C an importable Python module; importing it runs the TORCH_LIBRARY
// registrations in the other translation units.
#include <Python.h>

static struct PyModuleDef wmfast_c_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&wmfast_c_module); }
