"""The metric gate (a pure function) and its application to registered versions."""
