#!/usr/bin/env bash
# The original setup guide's steps as `aws` CLI calls (the manual way this tool
# replaces), for bench/deploy.sh to time against the same moto. Prints one line per
# call; exits non-zero on the first failure unless CONTINUE=1.
set -uo pipefail
AWS=${AWS:-aws}
REGION=${AWS_DEFAULT_REGION:-us-east-1}
ACCOUNT=123456789012
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
calls=0
failed=0
call() {
  calls=$((calls + 1))
  if ! "$AWS" "$@" >/dev/null 2>"$dir/err"; then
    failed=$((failed + 1))
    echo "failed: aws $1 $2: $(tail -1 "$dir/err")" >&2
    [ "${CONTINUE:-0}" = 1 ] || exit 1
  fi
}

cat >"$dir/ecs-trust.json" <<'JSON'
{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}
JSON
cat >"$dir/events-trust.json" <<'JSON'
{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"events.amazonaws.com"},"Action":"sts:AssumeRole"}]}
JSON
cat >"$dir/task-policy.json" <<JSON
{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":["secretsmanager:GetSecretValue","secretsmanager:PutSecretValue"],"Resource":"arn:aws:secretsmanager:$REGION:$ACCOUNT:secret:*"},
 {"Effect":"Allow","Action":["dynamodb:Scan","dynamodb:GetItem","dynamodb:Query"],"Resource":"arn:aws:dynamodb:$REGION:$ACCOUNT:table/Robocorp_Client_Org_Workspace_IDs"}]}
JSON

# 1. Repository and logs
call ecr create-repository --repository-name qbo-invoice-processor --image-scanning-configuration scanOnPush=true
call logs create-log-group --log-group-name /ecs/qbo-invoice-processor
call logs put-retention-policy --log-group-name /ecs/qbo-invoice-processor --retention-in-days 30
# 2. Roles
call iam create-role --role-name ecsTaskExecutionRole-QBOInvoiceProcessor --assume-role-policy-document "file://$dir/ecs-trust.json"
call iam attach-role-policy --role-name ecsTaskExecutionRole-QBOInvoiceProcessor --policy-arn arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy
call iam create-role --role-name ecsTaskRole-QBOInvoiceProcessor --assume-role-policy-document "file://$dir/ecs-trust.json"
call iam put-role-policy --role-name ecsTaskRole-QBOInvoiceProcessor --policy-name QBOInvoiceProcessorPolicy --policy-document "file://$dir/task-policy.json"
# 3. Cluster and task definition
call ecs create-cluster --cluster-name qbo-invoice-processor-cluster
cat >"$dir/task.json" <<JSON
{"family":"qbo-invoice-processor","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"2048","memory":"4096",
 "executionRoleArn":"arn:aws:iam::$ACCOUNT:role/ecsTaskExecutionRole-QBOInvoiceProcessor",
 "taskRoleArn":"arn:aws:iam::$ACCOUNT:role/ecsTaskRole-QBOInvoiceProcessor",
 "containerDefinitions":[{"name":"invoice-processor","image":"$ACCOUNT.dkr.ecr.$REGION.amazonaws.com/qbo-invoice-processor:latest","essential":true,"memory":4096,
  "environment":[{"name":"AWS_REGION","value":"$REGION"},{"name":"QBO_SECRET_NAME","value":"QBO/10000"},{"name":"MSGRAPH_SECRET_NAME","value":"MsGraph/10000"},
   {"name":"CLICKUP_SECRET_NAME","value":"ClickUp/10000"},{"name":"ROBOCORP_API_SECRET_NAME","value":"RoboCorp/10000/ClientAPIKeys"},
   {"name":"DYNAMODB_TABLE_ROBOCORP_CLIENTS","value":"Robocorp_Client_Org_Workspace_IDs"},{"name":"BOOKKEEPER_EMAIL","value":"bookkeeper@example.com"},
   {"name":"SENDER_EMAIL","value":"billing@example.com"},{"name":"EXCLUDED_CUSTOMERS","value":"10001 - AICPA"},{"name":"MS_GRAPH_HOSTNAME","value":"example.sharepoint.com"}],
  "logConfiguration":{"logDriver":"awslogs","options":{"awslogs-group":"/ecs/qbo-invoice-processor","awslogs-region":"$REGION","awslogs-stream-prefix":"ecs"}}}]}
JSON
call ecs register-task-definition --cli-input-json "file://$dir/task.json"
# 4. Schedules (classic rules, UTC) with the events role
call iam create-role --role-name EventBridgeECSRole-QBOInvoiceProcessor --assume-role-policy-document "file://$dir/events-trust.json"
call iam attach-role-policy --role-name EventBridgeECSRole-QBOInvoiceProcessor --policy-arn arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceEventsRole
subnets=$("$AWS" ec2 describe-subnets --query 'Subnets[?DefaultForAz].SubnetId' --output text | tr '\t' ',')
calls=$((calls + 1))
sg=$("$AWS" ec2 describe-security-groups --group-names default --query 'SecurityGroups[0].GroupId' --output text)
calls=$((calls + 1))
for job in send create; do
  if [ $job = send ]; then cron="cron(0 13 * * ? *)"; else cron="cron(0 17 4 * ? *)"; fi
  call events put-rule --name "qbo-$job-invoices" --schedule-expression "$cron"
  cat >"$dir/targets.json" <<JSON
[{"Id":"1","Arn":"arn:aws:ecs:$REGION:$ACCOUNT:cluster/qbo-invoice-processor-cluster","RoleArn":"arn:aws:iam::$ACCOUNT:role/EventBridgeECSRole-QBOInvoiceProcessor",
  "EcsParameters":{"TaskDefinitionArn":"arn:aws:ecs:$REGION:$ACCOUNT:task-definition/qbo-invoice-processor","TaskCount":1,"LaunchType":"FARGATE",
   "NetworkConfiguration":{"awsvpcConfiguration":{"Subnets":["${subnets//,/\",\"}"],"SecurityGroups":["$sg"],"AssignPublicIp":"ENABLED"}}},
  "Input":"{\"containerOverrides\":[{\"name\":\"invoice-processor\",\"command\":[\"--$job-invoices\"]}]}"}]
JSON
  call events put-targets --rule "qbo-$job-invoices" --targets "file://$dir/targets.json"
done
# 5. Alerts
call sns create-topic --name qbo-invoice-processor-alerts
call sns subscribe --topic-arn "arn:aws:sns:$REGION:$ACCOUNT:qbo-invoice-processor-alerts" --protocol email --notification-endpoint bookkeeper@example.com
call cloudwatch put-metric-alarm --alarm-name qbo-invoice-processor-failures --namespace AWS/ECS --metric-name TasksFailed \
  --dimensions Name=ClusterName,Value=qbo-invoice-processor-cluster --statistic Sum --period 300 --evaluation-periods 1 \
  --threshold 1 --comparison-operator GreaterThanOrEqualToThreshold --alarm-actions "arn:aws:sns:$REGION:$ACCOUNT:qbo-invoice-processor-alerts"
echo "calls=$calls failed=$failed"
