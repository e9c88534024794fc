# smarter-device-manager: a static binary in an empty image (no shell, no
# libc). The binary is built first (make image), since no builder image can
# be pulled here and none is needed: CGO_ENABLED=0 makes it self-contained.
# make image-multiarch builds the same image for three platforms, without buildx (tools/ociimage).
FROM scratch
ARG TARGETARCH=amd64
COPY dist/linux-${TARGETARCH}/smarter-device-manager /smarter-device-manager
# --mode=dra (or SMARTER_DEVICE_MANAGER_MODE=dra) runs this one instead.
COPY dist/linux-${TARGETARCH}/smarter-device-manager-dra /smarter-device-manager-dra
# The old daemon's config path: its ConfigMap mounts keep working.
WORKDIR /root
ENTRYPOINT ["/smarter-device-manager"]
