//! GGUF import (TODO)
