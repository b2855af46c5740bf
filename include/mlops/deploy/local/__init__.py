"""The local deployment target: model server processes behind a weighted router."""
