# Column encoders for dtproto.arrow.encode_table, compiled into dtproto._codec_c
# (included at the end of _codec_c.pyx, so they share its escaping and number
# writers).  Empty until the C encode path lands.
