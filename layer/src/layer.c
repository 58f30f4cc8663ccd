/* Placeholder translation unit until the hook table lands. */
int doppel_layer_placeholder;
