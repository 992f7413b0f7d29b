# The region's VPC over three AZs. Subnet plan of the /16:
#   public  /20 x3 (index 0-2): the gateways' load balancer, NAT gateways
#   private /20 x3 (index 3-5): gateways, core, core load balancer, MSK
#   data    /24 x3 (10.x.96-98.0): FoundationDB only, whose hosts take fixed
#           addresses (the cluster file names its coordinators by address),
#           so no auto-scaled instance can take one of theirs.

locals {
  public_subnet_cidrs  = [for i in range(3) : cidrsubnet(local.region.vpc_cidr, 4, i)]
  private_subnet_cidrs = [for i in range(3) : cidrsubnet(local.region.vpc_cidr, 4, 3 + i)]
  data_subnet_cidrs    = [for i in range(3) : cidrsubnet(local.region.vpc_cidr, 8, 96 + i)]
  nat_gateway_count    = var.network.single_nat_gateway ? 1 : 3
}

resource "aws_vpc" "this" {
  cidr_block = local.region.vpc_cidr
  # Route 53 private zones (meridian.internal) and MSK broker names need
  # the VPC resolver.
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = merge(local.tags, { Name = local.prefix })
}

# Nothing uses the default security group; emptied so that nothing can.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.prefix}-default-unused" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = local.prefix })
}

resource "aws_subnet" "public" {
  count = 3

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = local.public_subnet_cidrs[count.index]
  # Nothing launched here needs a public address: the load balancer and
  # the NAT gateways bring their own.
  map_public_ip_on_launch = false

  tags = merge(local.tags, { Name = "${local.prefix}-public-${local.azs[count.index]}" })
}

resource "aws_subnet" "private" {
  count = 3

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = local.private_subnet_cidrs[count.index]

  tags = merge(local.tags, { Name = "${local.prefix}-private-${local.azs[count.index]}" })
}

resource "aws_subnet" "data" {
  count = 3

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = local.data_subnet_cidrs[count.index]

  tags = merge(local.tags, { Name = "${local.prefix}-data-${local.azs[count.index]}" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.prefix}-public" })
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count = 3

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_eip" "nat" {
  count = local.nat_gateway_count

  domain = "vpc"
  tags   = merge(local.tags, { Name = "${local.prefix}-nat-${local.azs[count.index]}" })

  depends_on = [aws_internet_gateway.this]
}

# Outbound only: AWS APIs (Secrets Manager, SSM, CloudWatch, KMS), the
# release artifact and packages. One per AZ by default, so that an AZ
# outage does not cut the other AZs' instances off their APIs.
resource "aws_nat_gateway" "this" {
  count = local.nat_gateway_count

  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id

  tags = merge(local.tags, { Name = "${local.prefix}-${local.azs[count.index]}" })

  depends_on = [aws_internet_gateway.this]
}

# One private route table per AZ, whatever the NAT count, so that the
# number of route tables (and of the peering routes modules/global adds to
# them) never depends on a variable.
resource "aws_route_table" "private" {
  count = 3

  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.prefix}-private-${local.azs[count.index]}" })
}

resource "aws_route" "private_nat" {
  count = 3

  route_table_id         = aws_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[var.network.single_nat_gateway ? 0 : count.index].id
}

resource "aws_route_table_association" "private" {
  count = 3

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

resource "aws_route_table_association" "data" {
  count = 3

  subnet_id      = aws_subnet.data[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

# S3 traffic (the release artifact, the cores' media reads and writes)
# stays off the NAT gateways: no per-GB processing charge.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${local.aws_region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = aws_route_table.private[*].id

  tags = merge(local.tags, { Name = "${local.prefix}-s3" })
}

# Flow logs: the record of who reached the core port and the FoundationDB
# and Kafka ports, for security reviews and for debugging a replication
# link that cannot connect.
resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/meridian/${var.name}/vpc-flow-logs"
  retention_in_days = var.observability.log_retention_days
  kms_key_id        = aws_kms_key.platform.arn

  tags = local.tags
}

resource "aws_flow_log" "this" {
  vpc_id               = aws_vpc.this.id
  traffic_type         = var.network.flow_log_traffic_type
  log_destination_type = "cloud-watch-logs"
  log_destination      = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn         = aws_iam_role.flow_logs.arn

  tags = local.tags
}
