//! /etc/zsnap/zsnap.conf and the precedence flags > environment > file > defaults.
